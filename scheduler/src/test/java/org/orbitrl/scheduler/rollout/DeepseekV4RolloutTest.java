package org.orbitrl.scheduler.rollout;

import org.junit.jupiter.api.Test;
import org.orbitrl.model.LoadedModel;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The rollout engine, unchanged, on the DeepSeek V4 fixture: greedy samples of the fixture's
 * prompt reproduce transformers' greedy sequence, in a group of three sharing the prompt's
 * prefill (each fork carries a copy of the compressors' state) and among other requests; sampled
 * completions' log-probs recomputed in one training-style forward equal rollout's bit for bit (the
 * decode state's attention, compressors and hyper-connections sum as the full forward does).
 */
class DeepseekV4RolloutTest {

    @Test
    void greedyGroupsReproduceTransformersThroughForkedCompressorState() {
        try (LoadedModel m = RolloutEngineTest.model("deepseek_v4")) {
            int[] prompt = RolloutEngineTest.ints(RolloutEngineTest.ref("deepseek_v4", "greedy.prompt"));
            long[] seq = RolloutEngineTest.ref("deepseek_v4", "greedy.sequence");
            int[] want = RolloutEngineTest.ints(Arrays.copyOfRange(seq, prompt.length, seq.length));
            SplittableRandom rnd = new SplittableRandom(3);
            List<Request> reqs = new ArrayList<>();
            reqs.add(Request.of("other0", RolloutEngineTest.randomPrompt(rnd, 11), SamplingParams.greedy(want.length)));
            reqs.add(new Request("fixture", prompt, SamplingParams.greedy(want.length), 3));
            reqs.add(Request.of("other1", RolloutEngineTest.randomPrompt(rnd, 5), SamplingParams.greedy(want.length)));
            List<Completion> out = RolloutEngineTest.engine(m, 256).generate(reqs);
            assertEquals(5, out.size());
            for (int s = 1; s <= 3; s++) {
                assertArrayEquals(want, out.get(s).tokens(), "deepseek_v4 greedy sample " + (s - 1) + " of the group");
                assertEquals(FinishReason.LENGTH, out.get(s).reason());
            }
        }
    }

    @Test
    void sampledRolloutRecomputesBitForBit() {
        SplittableRandom rnd = new SplittableRandom(3);
        List<Request> reqs = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            reqs.add(new Request("s" + i, RolloutEngineTest.randomPrompt(rnd, 4 + rnd.nextInt(10)),
                    SamplingParams.sample(1.0f, 0.95f, 8, 200 + i), 2));
        }
        try (LoadedModel m = RolloutEngineTest.model("deepseek_v4")) {
            List<Completion> out = RolloutEngineTest.engine(m, 256).generate(reqs);
            int tokens = 0;
            for (Completion c : out) {
                tokens += c.tokens().length;
            }
            assertEquals(6, out.size());
            var gap = Recompute.gap(out, Recompute.policyLogprobs(m.model(), out, 1.0f));
            assertTrue(gap.exact(), "deepseek_v4 recompute on the cpu: " + gap);
            assertEquals(tokens, gap.tokens());
            assertTrue(tokens >= 6, "every completion has tokens: " + tokens);
        }
    }

    /**
     * Prompts of 40-70 tokens and 16 sampled tokens each: past the fixture's window, with the indexer choosing 4 of up
     * to 21 closed entries for each query; the recompute still equals rollout's log-probs bit for bit.
     */
    @Test
    void pastTheWindowAndTheIndexersTopKTheRecomputeIsBitForBit() {
        try (LoadedModel m = RolloutEngineTest.model("deepseek_v4")) {
            List<Completion> out = RolloutEngineTest.engine(m, 512).generate(pastTheWindow());
            var gap = Recompute.gap(out, Recompute.policyLogprobs(m.model(), out, 1.0f));
            assertTrue(gap.exact(), "deepseek_v4 past its window, recompute on the cpu: " + gap);
            assertTrue(gap.tokens() >= 8 * 8, "the completions are long enough to slide the window: " + gap.tokens());
        }
    }

    /** Four seeded requests of two samples each, prompts of 40-70 tokens and 16 sampled tokens: past the fixture's window. */
    static List<Request> pastTheWindow() {
        SplittableRandom rnd = new SplittableRandom(11);
        List<Request> reqs = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            reqs.add(new Request("long" + i, RolloutEngineTest.randomPrompt(rnd, 40 + rnd.nextInt(31)),
                    SamplingParams.sample(1.0f, 1.0f, 16, 300 + i), 2));
        }
        return reqs;
    }
}
