package org.orbitrl.scheduler.rollout;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.memory.plan.KvCacheLayout;
import org.orbitrl.model.LoadedModel;

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
            SplittableRandom rnd = new SplittableRandom(21);
            List<Request> reqs = new ArrayList<>();
            for (int i = 0; i < 3; i++) {
                reqs.add(new Request("g" + i, RolloutEngineTest.randomPrompt(rnd, 4 + rnd.nextInt(10)),
                        SamplingParams.sample(1.0f, 1.0f, 8, 100 + i), 2));
            }
            List<Completion> out = RolloutEngineTest.engine(m, 128).generate(reqs);
            assertEquals(6, out.size());
            var gap = Recompute.gap(out, Recompute.policyLogprobs(m.model(), out, 1.0f));
            assertTrue(gap.exact(), "recompute vs rollout: " + gap);
            assertEquals(6 * 8, gap.tokens());
        }
    }
}
