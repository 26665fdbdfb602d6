package org.orbitrl.model.arch.dsv4;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.StrictBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The indexer keeps every closed entry of a query that has no more of them than its top-k without scoring them
 * ({@link DeepseekV4Indexer#select}): on {@link StrictBackend} (the device paths), the fixture's layers with an index
 * top-k of 12 at rate 4, two sequences decoded from 10 and 36 tokens of context for 30 steps, so that the batch's
 * steps go from every query within the top-k to one beyond it. Each step's logits are those of the same steps with
 * the scores always made ({@code orbit.v4.indexerScores=always}) bit for bit, and the steps within the top-k read
 * less back from the device (the scores' copy is gone), where the steps beyond it read the same.
 */
class DeepseekV4IndexerChoiceTest {
    private static final int TOP_K = 12;

    @Test
    void queriesWithinTheTopKKeepEveryClosedEntryWithoutScores() throws Exception {
        ModelSpec spec = ConfigLoader.load(withTopK(TestSafetensors.fixtures().resolve("deepseek_v4"), TOP_K));
        int rate = 4; // the fixture's compressed-sparse rate
        try (StrictBackend strict = new StrictBackend()) {
            DeepseekV4Model model = DeepseekV4Model.load(spec, new RandomDeepseekV4(spec, 11), strict);
            Run skipped = decode(strict, model, "needed");
            Run scored = decode(strict, model, "always");
            int within = 0;
            int beyond = 0;
            for (int s = 0; s < STEPS; s++) {
                assertArrayEquals(scored.logits.get(s), skipped.logits.get(s), "step " + s + "'s logits");
                // the step's queries sit at positions CONTEXT[b] + s; the batch is within while every one is
                int widest = Math.max(CONTEXT[0], CONTEXT[1]) + s;
                if ((widest + 1) / rate <= TOP_K) {
                    within++;
                    assertTrue(skipped.reads[s] < scored.reads[s], "step " + s + " within the top-k reads back less: "
                            + skipped.reads[s] + " against " + scored.reads[s]);
                } else {
                    beyond++;
                    assertEquals(scored.reads[s], skipped.reads[s], "step " + s + " beyond the top-k reads back the same");
                }
            }
            assertTrue(within >= 10 && beyond >= 10, within + " steps within the top-k, " + beyond + " beyond");
        }
    }

    @Test
    void anUnknownSettingIsRefusedNamingIt() throws Exception {
        ModelSpec spec = ConfigLoader.load(withTopK(TestSafetensors.fixtures().resolve("deepseek_v4"), TOP_K));
        try (StrictBackend strict = new StrictBackend()) {
            DeepseekV4Model model = DeepseekV4Model.load(spec, new RandomDeepseekV4(spec, 11), strict);
            String before = System.getProperty(DeepseekV4Indexer.SCORES_PROPERTY);
            System.setProperty(DeepseekV4Indexer.SCORES_PROPERTY, "sometimes");
            try (KvCache c = model.newCache(16)) {
                IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                        () -> model.forwardLast(List.of(new CausalLM.Segment(new int[]{1, 2, 3, 4, 5, 6, 7, 8}, c))));
                assertTrue(e.getMessage().contains("orbit.v4.indexerScores=sometimes"), e.getMessage());
                assertTrue(e.getMessage().contains("needed or always"), e.getMessage());
            } finally {
                restore(before);
            }
        }
    }

    private static final int[] CONTEXT = {10, 36};
    private static final int STEPS = 30;

    private record Run(List<float[]> logits, int[] reads) {
    }

    /** The two sequences' decode under {@code setting}, each step's last logits and the host reads it made. */
    private static Run decode(StrictBackend strict, DeepseekV4Model model, String setting) {
        String before = System.getProperty(DeepseekV4Indexer.SCORES_PROPERTY);
        System.setProperty(DeepseekV4Indexer.SCORES_PROPERTY, setting);
        SplittableRandom r = new SplittableRandom(2026);
        List<KvCache> caches = new ArrayList<>();
        try {
            for (int context : CONTEXT) {
                KvCache c = model.newCache(context + STEPS + 4);
                caches.add(c);
                strict.allocator().release(model.forwardLast(List.of(new CausalLM.Segment(
                        r.ints(context, 0, model.vocabSize()).toArray(), c))));
            }
            List<float[]> logits = new ArrayList<>();
            int[] reads = new int[STEPS];
            for (int s = 0; s < STEPS; s++) {
                List<CausalLM.Segment> segs = new ArrayList<>();
                for (KvCache c : caches) {
                    segs.add(new CausalLM.Segment(new int[]{r.nextInt(model.vocabSize())}, c));
                }
                int at = strict.allocator().hostReads();
                Tensor t = model.forwardLast(segs);
                reads[s] = strict.allocator().hostReads() - at;
                logits.add(strict.allocator().toFloats(t));
                strict.allocator().release(t);
            }
            return new Run(logits, reads);
        } finally {
            caches.forEach(KvCache::close);
            restore(before);
        }
    }

    private static void restore(String before) {
        if (before == null) {
            System.clearProperty(DeepseekV4Indexer.SCORES_PROPERTY);
        } else {
            System.setProperty(DeepseekV4Indexer.SCORES_PROPERTY, before);
        }
    }

    /** The fixture's config with the indexer keeping {@code topK} entries. */
    private static Path withTopK(Path fixture, int topK) throws java.io.IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode cfg = (ObjectNode) json.readTree(fixture.resolve("config.json").toFile());
        cfg.put("index_topk", topK);
        Path dir = Files.createTempDirectory("v4-topk");
        json.writeValue(dir.resolve("config.json").toFile(), cfg);
        return dir;
    }
}
