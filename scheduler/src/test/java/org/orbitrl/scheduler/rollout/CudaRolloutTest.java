package org.orbitrl.scheduler.rollout;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The rollout engine on the CUDA backend in exact mode (weights, paged KV cache and logits in
 * device memory; only the rows sampled from come to the host): greedy decoding reproduces
 * transformers' greedy sequence alone and inside a batch of 7; seeded sampling draws the same
 * tokens as the CPU backend with policy log-probs within 1e-5 + 1e-5·|cpu|; and the log-probs
 * recomputed in one training-style prefill equal rollout's bit for bit. Skipped where no CUDA
 * device is present.
 */
class CudaRolloutTest {
    private static CudaBackend gpu;

    @BeforeAll
    static void open() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), true);
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
        }
    }

    private static LoadedModel onGpu(String arch) {
        return LoadedModel.load(RolloutEngineTest.HF.resolve(arch), gpu, BaseFormat.BF16);
    }

    @Test
    void greedyReproducesTransformersOnTheGpu() {
        for (String arch : List.of("qwen3", "qwen3_moe")) {
            try (LoadedModel m = onGpu(arch)) {
                int[] prompt = RolloutEngineTest.ints(RolloutEngineTest.ref(arch, "greedy.prompt"));
                long[] seq = RolloutEngineTest.ref(arch, "greedy.sequence");
                int[] want = RolloutEngineTest.ints(Arrays.copyOfRange(seq, prompt.length, seq.length));
                SplittableRandom rnd = new SplittableRandom(5);
                for (int batch : new int[]{1, 7}) {
                    List<Request> reqs = new ArrayList<>();
                    for (int i = 0; i < batch; i++) {
                        int[] p = i == batch / 2 ? prompt : RolloutEngineTest.randomPrompt(rnd, 3 + rnd.nextInt(12));
                        reqs.add(Request.of("r" + i, p, SamplingParams.greedy(want.length)));
                    }
                    List<Completion> out = RolloutEngineTest.engine(m, 256).generate(reqs);
                    assertArrayEquals(want, out.get(batch / 2).tokens(), arch + " greedy on cuda in a batch of " + batch);
                    assertEquals(FinishReason.LENGTH, out.get(batch / 2).reason());
                }
            }
        }
    }

    @Test
    void sampledRolloutMatchesTheCpuAndRecomputesBitForBit() {
        SplittableRandom rnd = new SplittableRandom(21);
        List<Request> reqs = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            reqs.add(new Request("g" + i, RolloutEngineTest.randomPrompt(rnd, 4 + rnd.nextInt(10)),
                    SamplingParams.sample(1.0f, 0.95f, 10, 100 + i), 2));
        }
        List<Completion> cpu;
        try (LoadedModel m = RolloutEngineTest.model("qwen3_moe")) {
            cpu = RolloutEngineTest.engine(m, 256).generate(reqs);
        }
        try (LoadedModel m = onGpu("qwen3_moe")) {
            List<Completion> dev = RolloutEngineTest.engine(m, 256).generate(reqs);
            assertSameDraws("qwen3_moe", cpu, dev);
            var gap = Recompute.gap(dev, Recompute.policyLogprobs(m.model(), dev, 1.0f));
            assertTrue(gap.exact(), "recompute on cuda in exact mode: " + gap);
            assertEquals(80, gap.tokens());
        }
    }

    /**
     * gpt-oss on the device, its sliding-window layers' rows in a window pool of 12 blocks of 4 (window 8) for 15
     * samples past the window and one of a 90-token prompt (fed in chunks of 37) and 40 new tokens: greedy reproduces
     * transformers' sequence; seeded sampling draws the CPU backend's tokens with log-probs within 1e-5 + 1e-5·|cpu|
     * and preempts for the window pool; the recompute in one training-style forward equals rollout's log-probs bit for
     * bit (given-back positions read the pool's zeros, masked by the window; gathers from a later tile of 64 keys sum
     * as exact mode's tiles do from position 0).
     */
    @Test
    void gptOssWithATightWindowPoolRecomputesBitForBit() {
        int[] prompt = RolloutEngineTest.ints(RolloutEngineTest.ref("gpt_oss", "greedy.prompt"));
        long[] seq = RolloutEngineTest.ref("gpt_oss", "greedy.sequence");
        int[] want = RolloutEngineTest.ints(Arrays.copyOfRange(seq, prompt.length, seq.length));
        SplittableRandom rnd = new SplittableRandom(51);
        List<Request> sampled = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            sampled.add(new Request("w" + i, RolloutEngineTest.randomPrompt(rnd, 4 + rnd.nextInt(11)),
                    SamplingParams.sample(1.0f, 1.0f, 20, 200 + i), 3));
        }
        // 90 prompt tokens in chunks of 37, then 40 decoded: the sliding layers' gathers start at the tile of keys 64-127
        sampled.add(new Request("long", RolloutEngineTest.randomPrompt(rnd, 90), SamplingParams.sample(1.0f, 1.0f, 40, 300), 1));
        RolloutEngine.Options tight = new RolloutEngine.Options(4, 256, 64, 512, RolloutEngine.Graphs.AUTO,
                org.orbitrl.kernels.DType.F32, 12);
        List<Completion> cpu;
        try (LoadedModel m = RolloutEngineTest.model("gpt_oss")) {
            cpu = new RolloutEngine(m.model(), null, tight, null).generate(sampled);
        }
        try (LoadedModel m = onGpu("gpt_oss")) {
            List<Completion> greedy = new RolloutEngine(m.model(), null, tight, null)
                    .generate(List.of(Request.of("fixture", prompt, SamplingParams.greedy(want.length))));
            assertArrayEquals(want, greedy.get(0).tokens(), "gpt_oss greedy on cuda");
            RolloutEngine e = new RolloutEngine(m.model(), null, tight, null);
            List<Completion> dev = e.generate(sampled);
            assertTrue(e.stats().preemptions() > 0, "12 window blocks for 15 samples must preempt: " + e.stats());
            int tokens = assertSameDraws("gpt_oss", cpu, dev);
            var gap = Recompute.gap(dev, Recompute.policyLogprobs(m.model(), dev, 1.0f));
            assertTrue(gap.exact(), "gpt_oss recompute on cuda in exact mode: " + gap);
            assertEquals(tokens, gap.tokens());
            assertArrayEquals(new int[]{256, 12}, e.freeBlocks(), "every block of both pools is back");
        }
    }

    /**
     * DeepSeek V4 on the device (its values in device memory, its attention and indexer through exact mode's kernels):
     * greedy samples of the fixture's prompt, in a group of three sharing its prefill (each fork a copy of the
     * compressors' state) among other requests, reproduce transformers' greedy sequence; seeded sampling draws the CPU
     * backend's tokens with log-probs within 1e-5 + 1e-5·|cpu|, and the recompute equals rollout's log-probs bit for bit.
     */
    @Test
    void deepseekV4RollsOutOnTheGpuAndRecomputesBitForBit() {
        int[] prompt = RolloutEngineTest.ints(RolloutEngineTest.ref("deepseek_v4", "greedy.prompt"));
        long[] seq = RolloutEngineTest.ref("deepseek_v4", "greedy.sequence");
        int[] want = RolloutEngineTest.ints(Arrays.copyOfRange(seq, prompt.length, seq.length));
        SplittableRandom rnd = new SplittableRandom(3);
        List<Request> greedy = new ArrayList<>();
        greedy.add(Request.of("other0", RolloutEngineTest.randomPrompt(rnd, 11), SamplingParams.greedy(want.length)));
        greedy.add(new Request("fixture", prompt, SamplingParams.greedy(want.length), 3));
        List<Request> sampled = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            sampled.add(new Request("s" + i, RolloutEngineTest.randomPrompt(rnd, 4 + rnd.nextInt(10)),
                    SamplingParams.sample(1.0f, 0.95f, 8, 200 + i), 2));
        }
        List<Completion> cpu;
        try (LoadedModel m = RolloutEngineTest.model("deepseek_v4")) {
            cpu = RolloutEngineTest.engine(m, 256).generate(sampled);
        }
        try (LoadedModel m = onGpu("deepseek_v4")) {
            List<Completion> out = RolloutEngineTest.engine(m, 256).generate(greedy);
            for (int s = 1; s <= 3; s++) {
                assertArrayEquals(want, out.get(s).tokens(), "deepseek_v4 greedy sample " + (s - 1) + " of the group on cuda");
            }
            List<Completion> dev = RolloutEngineTest.engine(m, 256).generate(sampled);
            int tokens = assertSameDraws("deepseek_v4", cpu, dev);
            var gap = Recompute.gap(dev, Recompute.policyLogprobs(m.model(), dev, 1.0f));
            assertTrue(gap.exact(), "deepseek_v4 recompute on cuda in exact mode: " + gap);
            assertEquals(tokens, gap.tokens());
        }
    }

    /**
     * DeepSeek V4 in exact mode on the device past its fixture's short window: prompts of 40-70 tokens and 16 sampled
     * tokens each, so that every layer's window slides, its compressors emit 10-21 entries and the indexer chooses 4 of
     * them for each query (its top-k); the recompute in one training-style forward equals rollout's log-probs bit for
     * bit, each decode step's attention having run over only its window and chosen entries and the training forward's
     * over its blocks of queries. The CPU backend's recompute of the same completions is within 1e-4 of them (the
     * device's attention and indexer against the host's loops).
     */
    @Test
    void deepseekV4PastItsWindowRecomputesBitForBitOnTheDevice() {
        List<Completion> out;
        try (LoadedModel m = onGpu("deepseek_v4")) {
            out = RolloutEngineTest.engine(m, 512).generate(DeepseekV4RolloutTest.pastTheWindow());
            int tokens = 0;
            for (Completion c : out) {
                tokens += c.tokens().length;
            }
            var gap = Recompute.gap(out, Recompute.policyLogprobs(m.model(), out, 1.0f));
            assertTrue(gap.exact(), "deepseek_v4 past its window, recompute on cuda in exact mode: " + gap);
            assertEquals(tokens, gap.tokens());
            assertTrue(tokens >= 8 * 8, "the completions are long enough to slide the window: " + tokens);
        }
        try (LoadedModel m = RolloutEngineTest.model("deepseek_v4")) {
            var host = Recompute.gap(out, Recompute.policyLogprobs(m.model(), out, 1.0f));
            assertTrue(host.maxAbs() <= 1e-4, "deepseek_v4 past its window, the cpu's recompute against the device's rollout: "
                    + host);
        }
    }

    /**
     * The device's completions draw the CPU's tokens, each policy log-prob within 1e-5 + 1e-5·|cpu|; returns the tokens
     * drawn.
     */
    private static int assertSameDraws(String arch, List<Completion> cpu, List<Completion> dev) {
        assertEquals(cpu.size(), dev.size(), arch + " completions on cpu and cuda");
        int tokens = 0;
        for (int i = 0; i < cpu.size(); i++) {
            Completion a = cpu.get(i);
            Completion b = dev.get(i);
            assertArrayEquals(a.tokens(), b.tokens(), arch + " completion " + i + " tokens on cpu and cuda");
            for (int t = 0; t < a.tokens().length; t++) {
                float x = a.policyLogprobs()[t];
                float y = b.policyLogprobs()[t];
                assertTrue(Math.abs(x - y) <= 1e-5 + 1e-5 * Math.abs(x),
                        arch + " completion " + i + " token " + t + " policy log-prob: cpu " + x + " cuda " + y);
            }
            tokens += b.tokens().length;
        }
        return tokens;
    }
}
