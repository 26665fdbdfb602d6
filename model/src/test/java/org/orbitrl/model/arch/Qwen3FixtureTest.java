package org.orbitrl.model.arch;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.TestSafetensors;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Qwen3 and Qwen3-MoE against Hugging Face transformers 5.17 references
 * ({@code shared/fixtures/hf/<arch>/reference.safetensors}): f32 compute from bf16 weights,
 * logits and every hidden state within 1e-4 absolute; greedy decoding through the KV cache
 * reproduces {@code greedy.sequence} token for token.
 */
public class Qwen3FixtureTest {
    static final float ATOL = 1e-4f;

    public static DecoderConfig config(String arch) {
        return DecoderConfig.from(org.orbitrl.model.spec.ConfigLoader.load(TestSafetensors.fixtures().resolve(arch)));
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void logitsAndHiddenStatesMatchTransformers(String arch) {
        var dir = TestSafetensors.fixtures().resolve(arch);
        var weights = new TestSafetensors(dir.resolve("model.safetensors"));
        var ref = new TestSafetensors(dir.resolve("reference.safetensors"));
        Backend backend = Backends.cpu();
        Qwen3Model model = Qwen3Model.load(config(arch), weights, backend, Qwen3Model.LoadOptions.full());
        Tensor ids = ref.get("input_ids"); // [2, 24] i64
        int b = ids.size(0);
        int t = ids.size(1);
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int i = 0; i < b; i++) {
            int[] toks = new int[t];
            for (int j = 0; j < t; j++) {
                toks[j] = (int) ids.getLong(i, j);
            }
            batch.add(new CausalLM.Segment(toks, model.newCache(t)));
        }
        Map<Integer, float[]> hidden = new HashMap<>();
        Tensor logits = model.forward(batch, (idx, h) -> hidden.put(idx, h.toFloatArray()));
        assertClose(arch + " logits", ref.get("logits").toFloatArray(), logits.toFloatArray(), ATOL);
        for (int i = 0; i <= 2; i++) {
            assertClose(arch + " hidden_states." + i, ref.get("hidden_states." + i).toFloatArray(), hidden.get(i), ATOL);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void greedyDecodingThroughTheCacheReproducesTransformers(String arch) {
        var dir = TestSafetensors.fixtures().resolve(arch);
        var ref = new TestSafetensors(dir.resolve("reference.safetensors"));
        Qwen3Model model = Qwen3Model.load(config(arch), new TestSafetensors(dir.resolve("model.safetensors")),
                Backends.cpu(), Qwen3Model.LoadOptions.full());
        long[] prompt = ref.get("greedy.prompt").toLongArray();
        long[] expected = ref.get("greedy.sequence").toLongArray();
        KvCache cache = model.newCache(4);
        int[] next = new int[prompt.length];
        for (int i = 0; i < prompt.length; i++) {
            next[i] = (int) prompt[i];
        }
        List<Long> got = new ArrayList<>();
        for (long p : prompt) {
            got.add(p);
        }
        while (got.size() < expected.length) {
            Tensor logits = model.forward(List.of(new CausalLM.Segment(next, cache)));
            float[] last = logits.select(0, logits.dim(0) - 1).toFloatArray();
            int best = 0;
            for (int v = 1; v < last.length; v++) {
                if (last[v] > last[best]) {
                    best = v;
                }
            }
            got.add((long) best);
            next = new int[]{best};
        }
        assertArrayEquals(expected, got.stream().mapToLong(Long::longValue).toArray(), arch + " greedy sequence");
        assertEquals(expected.length - 1, cache.length());
    }

    public static void assertClose(String what, float[] ref, float[] got, float atol) {
        assertEquals(ref.length, got.length, what + " length");
        int bad = 0;
        StringBuilder sb = new StringBuilder();
        float worst = 0;
        for (int i = 0; i < ref.length; i++) {
            float d = Math.abs(ref[i] - got[i]);
            worst = Math.max(worst, d);
            if (!(d <= atol)) {
                if (bad++ < 5) {
                    sb.append(String.format("  [%d] ref %.6f got %.6f (|d| %.2e)%n", i, ref[i], got[i], d));
                }
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + ref.length + " elements off by more than " + atol + " (worst " + worst + ")\n" + sb);
        }
    }
}
