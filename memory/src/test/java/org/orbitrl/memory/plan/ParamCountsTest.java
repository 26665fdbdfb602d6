package org.orbitrl.memory.plan;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Pattern;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.model.spec.ModelSpec;

/**
 * Parameter counts against transformers 5.17, to the parameter, for every config in
 * {@code ../shared/models} and every fixture model. The reference is
 * {@code param_counts/hf_5.17_counts.json}, made on the GPU machine by {@code count_params.py}
 * (both beside each other in the test resources): the model built on the meta device and its
 * parameters summed. Per family, the reference is the same run's per-name totals, sorted into
 * families here by their Hugging Face names, independently of how the planner names them. The
 * printed table puts the authors' rounded statements beside the counts ("activated-embed" leaves
 * out the embedding table, as gpt-oss's authors count active parameters).
 */
class ParamCountsTest {
    private static JsonNode counts;
    private static JsonNode patterns;

    @BeforeAll
    static void load() throws IOException {
        counts = read("param_counts/hf_5.17_counts.json").get("models");
        patterns = read("param_counts/hf_5.17_param_patterns.json");
        assertTrue(counts.size() >= 15, "ground truth lists " + counts.size() + " models");
    }

    private static JsonNode read(String resource) throws IOException {
        try (InputStream in = ParamCountsTest.class.getClassLoader().getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalStateException("test resource " + resource + " is missing");
            }
            return new ObjectMapper().readTree(in);
        }
    }

    @Test
    void totalsAndBuffersMatchTransformersExactly() {
        List<String> mismatches = new ArrayList<>();
        StringBuilder table = new StringBuilder(String.format(Locale.ROOT,
                "%-26s %20s %20s %18s %18s %16s %16s %9s  %s%n", "model", "total (Orbit)", "transformers 5.17",
                "activated", "activated-embed", "MTP (apart)", "stated total", "activated", "source of the statement"));
        for (var it = counts.properties().iterator(); it.hasNext(); ) {
            var e = it.next();
            String name = e.getKey();
            JsonNode ref = e.getValue();
            ModelSpec spec = TestModels.spec(name);
            ParamCounts c = ParamCounts.of(spec);
            long hfTotal = ref.get("total_params").asLong();
            long hfBuffers = ref.get("persistent_buffer_numel").asLong();
            if (c.total() != hfTotal) {
                mismatches.add(name + ": total " + c.total() + " != transformers " + hfTotal + " (diff "
                        + (c.total() - hfTotal) + ")");
            }
            if (c.buffers() != hfBuffers) {
                mismatches.add(name + ": saved buffers " + c.buffers() + " != transformers " + hfBuffers);
            }
            assertEquals(0, ref.get("mtp_params_instantiated").asLong(), name + ": transformers instantiated MTP layers");
            var stated = StatedParams.forConfig(TestModels.configOf(name));
            table.append(String.format(Locale.ROOT, "%-26s %,20d %,20d %,18d %,18d %,16d %16s %9s  %s%n", name, c.total(),
                    hfTotal, c.active(), c.active() - c.of(ParamFamily.EMBEDDING), c.mtp(), stated.map(StatedParams::total).orElse(""),
                    stated.map(StatedParams::activated).orElse(""), stated.map(StatedParams::source).orElse("")));
        }
        System.out.println(table);
        assertTrue(mismatches.isEmpty(), String.join("\n", mismatches));
    }

    @Test
    void familiesMatchTransformersNames() {
        List<String> mismatches = new ArrayList<>();
        for (var it = patterns.properties().iterator(); it.hasNext(); ) {
            var e = it.next();
            if (e.getKey().startsWith("_")) {
                continue;
            }
            Map<ParamFamily, Long> ref = new EnumMap<>(ParamFamily.class);
            for (ParamFamily f : ParamFamily.values()) {
                ref.put(f, 0L);
            }
            for (var p = e.getValue().get("per_pattern").properties().iterator(); p.hasNext(); ) {
                var q = p.next();
                ref.merge(familyOfHfName(q.getKey()), q.getValue().get("numel").asLong(), Long::sum);
            }
            Map<ParamFamily, Long> ours = ParamCounts.of(TestModels.spec(e.getKey())).byFamily();
            for (ParamFamily f : ParamFamily.values()) {
                if (!ref.get(f).equals(ours.get(f))) {
                    mismatches.add(e.getKey() + " " + f + ": " + ours.get(f) + " != transformers " + ref.get(f));
                }
            }
        }
        assertTrue(mismatches.isEmpty(), String.join("\n", mismatches));
    }

    private static final Pattern NORM = Pattern.compile(".*(norm|layernorm)\\.weight$");

    /** The family of a transformers parameter name (with indices replaced by '*'). */
    static ParamFamily familyOfHfName(String n) {
        if (n.startsWith("model.embed_tokens.")) {
            return ParamFamily.EMBEDDING;
        }
        if (n.startsWith("lm_head.")) {
            return ParamFamily.OUTPUT_HEAD;
        }
        if (NORM.matcher(n).matches()) {
            return ParamFamily.NORMS;
        }
        if (n.contains("_hc.") || n.contains("hc_head.")) {
            return ParamFamily.HYPER_CONNECTIONS;
        }
        if (n.contains(".mlp.experts.")) {
            return ParamFamily.ROUTED_EXPERTS;
        }
        if (n.contains(".mlp.shared_experts.")) {
            return ParamFamily.SHARED_EXPERTS;
        }
        if (n.contains(".mlp.gate.") || n.contains(".mlp.router.")) {
            return ParamFamily.ROUTER;
        }
        if (n.contains(".mlp.")) {
            return ParamFamily.DENSE_MLP;
        }
        if (n.contains(".self_attn.")) {
            return ParamFamily.ATTENTION;
        }
        throw new IllegalArgumentException("no family for transformers parameter " + n);
    }

    @Test
    void activatedIsTotalMinusUnusedRoutedExperts() {
        // Kimi-K2: 1,014,686,023,680 routed parameters in 60 MoE layers of 384 experts, 8 per token.
        ParamCounts c = ParamCounts.of(TestModels.spec("models/kimi-k2.6"));
        assertEquals(1_014_686_023_680L, c.routedExperts());
        assertEquals(c.total() - 1_014_686_023_680L / 384 * 376, c.active());
        // A dense model activates everything.
        ParamCounts dense = ParamCounts.of(TestModels.spec("models/qwen3-4b"));
        assertEquals(dense.total(), dense.active());
    }

    @Test
    void deepseekV3MultiTokenPredictionLayerIsReportedApart() {
        // One MoE layer (attention 187,107,328 + experts 256*3*7168*2048 + shared 3*7168*2048
        // + router 256*7168 + 2 norms) + enorm, hnorm, shared_head.norm + eh_proj [7168, 14336].
        long layer = 187_107_328L + 256L * 3 * 7168 * 2048 + 3L * 7168 * 2048 + 256L * 7168 + 2 * 7168;
        ParamCounts c = ParamCounts.of(TestModels.spec("models/deepseek-v3"));
        assertEquals(layer + 3 * 7168 + 7168L * 14336, c.mtp());
        assertEquals(2L * 129280 * 7168, c.mtpSharedCopies());
    }
}
