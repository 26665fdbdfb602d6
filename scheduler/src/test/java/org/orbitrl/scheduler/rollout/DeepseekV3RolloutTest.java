package org.orbitrl.scheduler.rollout;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.memory.plan.KvCacheLayout;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.AdapterSlots;
import org.orbitrl.model.adapter.LoraAdapter;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The rollout engine, unchanged, on the DeepSeek-V3 fixture (multi-head latent attention, latent
 * KV cache in the paged pool): greedy decoding reproduces transformers' greedy sequence alone and
 * in a batch of 5; the pool stores what the memory planner budgets per token (kv_lora_rank +
 * qk_rope_head_dim per layer, f32 on the CPU); and the trainer's recomputed log-probs equal
 * rollout's bit for bit.
 */
class DeepseekV3RolloutTest {

    @Test
    void greedyAndCacheSizeOnTheLatentCache() {
        try (LoadedModel m = RolloutEngineTest.model("deepseek_v3")) {
            int[] prompt = RolloutEngineTest.ints(RolloutEngineTest.ref("deepseek_v3", "greedy.prompt"));
            long[] seq = RolloutEngineTest.ref("deepseek_v3", "greedy.sequence");
            int[] want = RolloutEngineTest.ints(Arrays.copyOfRange(seq, prompt.length, seq.length));
            SplittableRandom rnd = new SplittableRandom(5);
            for (int batch : new int[]{1, 5}) {
                List<Request> reqs = new ArrayList<>();
                for (int i = 0; i < batch; i++) {
                    int[] p = i == batch / 2 ? prompt : RolloutEngineTest.randomPrompt(rnd, 3 + rnd.nextInt(12));
                    reqs.add(Request.of("r" + i, p, SamplingParams.greedy(want.length)));
                }
                List<Completion> out = RolloutEngineTest.engine(m, 128).generate(reqs);
                assertArrayEquals(want, out.get(batch / 2).tokens(), "greedy in a batch of " + batch);
            }
            RolloutEngine e = RolloutEngineTest.engine(m, 16);
            long planned = 0;
            for (int l = 0; l < m.spec().numLayers(); l++) {
                planned += KvCacheLayout.bytesPerToken(m.spec(), l, DType.F32);
            }
            assertEquals(planned, e.kvBytesPerToken());
            // 3 layers x (kv_lora_rank 16 + qk_rope_head_dim 8) x 4 bytes, by hand
            assertEquals(3L * 24 * 4, e.kvBytesPerToken());
        }
    }

    @Test
    void recomputedLogprobsEqualRolloutBitForBit() {
        try (LoadedModel m = RolloutEngineTest.model("deepseek_v3")) {
            List<Request> reqs = sampledRequests("g", 21, 100);
            List<Completion> out = RolloutEngineTest.engine(m, 128).generate(reqs);
            assertEquals(6, out.size());
            var gap = Recompute.gap(out, Recompute.policyLogprobs(m.model(), out, 1.0f));
            assertTrue(gap.exact(), "recompute vs rollout: " + gap);
            assertEquals(6 * 8, gap.tokens());
        }
    }

    /**
     * With a LoRA adapter on every attention projection, kv_b_proj included (whose terms the absorbed form adds per head
     * rather than merging them into its matrix, in decode steps of one token a sequence and in the recompute's forward
     * of whole sequences alike), the recomputed log-probs still equal rollout's bit for bit, and differ from the
     * adapter-free model's (the adapter is felt).
     */
    @Test
    void recomputedLogprobsWithAnAdaptedKvBEqualRolloutBitForBit() {
        AdapterConfig cfg = AdapterConfig.lora(4, 8, List.of("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"),
                List.of());
        try (LoadedModel m = RolloutEngineTest.model("deepseek_v3")) {
            List<Request> reqs = sampledRequests("k", 23, 300);
            List<Completion> plain = RolloutEngineTest.engine(m, 128).generate(reqs);
            float[] before = Recompute.policyLogprobs(m.model(), plain, 1.0f).get(0);
            AdapterSlots slots = new AdapterSlots(m.targets(),
                    () -> LoraAdapter.create(cfg, m.targets(), m.model().backend().allocator(), 7), 0);
            DecodeGraphsTest.randomize(slots.active(), 29, 0.2f);
            assertTrue(slots.active().params().stream().anyMatch(p -> p.name().contains("kv_b_proj")), "kv_b_proj adapted");
            try (RolloutEngine e = new RolloutEngine(m.model(), slots, new RolloutEngine.Options(4, 128, 64, 512), null)) {
                List<Completion> out = e.generate(reqs);
                var gap = Recompute.gap(out, Recompute.policyLogprobs(m.model(), out, 1.0f));
                assertTrue(gap.exact(), "recompute vs rollout with the adapter: " + gap);
                assertEquals(6 * 8, gap.tokens());
            }
            float[] after = Recompute.policyLogprobs(m.model(), plain, 1.0f).get(0);
            assertTrue(!Arrays.equals(before, after), "the adapter changes the log-probs of the same tokens");
        }
    }

    /** Three requests of 4-13 random tokens, each sampled twice for 8 tokens at temperature 1 with seeds from {@code seed0}. */
    private static List<Request> sampledRequests(String prefix, long promptSeed, int seed0) {
        SplittableRandom rnd = new SplittableRandom(promptSeed);
        List<Request> reqs = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            reqs.add(new Request(prefix + i, RolloutEngineTest.randomPrompt(rnd, 4 + rnd.nextInt(10)),
                    SamplingParams.sample(1.0f, 1.0f, 8, seed0 + i), 2));
        }
        return reqs;
    }
}
