package org.orbitrl.scheduler.rollout;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backends;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.checkpoint.Checkpoint;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The rollout engine on the Qwen3-MoE fixture: greedy decoding reproduces transformers' greedy
 * sequence alone and inside a batch of 7; a seeded request draws the same tokens whatever else is
 * in the batch; preemption under a tiny cache changes nothing; prefix sharing saves blocks; and in
 * exact mode the trainer's recomputed log-probs equal rollout's bit for bit.
 */
class RolloutEngineTest {
    static final Path HF = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf");

    static LoadedModel model(String arch) {
        return LoadedModel.load(HF.resolve(arch), Backends.cpu(), BaseFormat.BF16);
    }

    static long[] ref(String arch, String name) {
        try (Checkpoint c = Checkpoint.open(HF.resolve(arch).resolve("reference.safetensors"))) {
            return c.tensor(name).toLongArray();
        }
    }

    static int[] ints(long[] a) {
        return Arrays.stream(a).mapToInt(x -> (int) x).toArray();
    }

    static int[] randomPrompt(SplittableRandom rnd, int len) {
        int[] p = new int[len];
        for (int i = 0; i < len; i++) {
            p[i] = rnd.nextInt(256);
        }
        return p;
    }

    static RolloutEngine engine(LoadedModel m, int blocks) {
        return new RolloutEngine(m.model(), null, new RolloutEngine.Options(4, blocks, 64, 512), null);
    }

    @Test
    void greedyReproducesTransformersAloneAndInABatchOfSeven() {
        for (String arch : List.of("qwen3", "qwen3_moe", "gpt_oss")) {   // gpt-oss: its sliding layers in a window pool
            try (LoadedModel m = model(arch)) {
                int[] prompt = ints(ref(arch, "greedy.prompt"));
                long[] seq = ref(arch, "greedy.sequence");
                int[] want = ints(Arrays.copyOfRange(seq, prompt.length, seq.length));
                SplittableRandom rnd = new SplittableRandom(5);
                for (int batch : new int[]{1, 7}) {
                    List<Request> reqs = new ArrayList<>();
                    for (int i = 0; i < batch; i++) {
                        int[] p = i == batch / 2 ? prompt : randomPrompt(rnd, 3 + rnd.nextInt(12));
                        reqs.add(Request.of("r" + i, p, SamplingParams.greedy(want.length)));
                    }
                    List<Completion> out = engine(m, 256).generate(reqs);
                    assertArrayEquals(want, out.get(batch / 2).tokens(), arch + " greedy in a batch of " + batch);
                    assertEquals(FinishReason.LENGTH, out.get(batch / 2).reason());
                }
            }
        }
    }

    /**
     * A bf16 KV cache (half the bytes a token takes) on every cache path of the host backend: Qwen3-MoE's fused decode
     * (norms, rope and the cache write in one step; decode attention over the paged cache), gpt-oss (sinks and sliding
     * windows through the gathered prefix) and DeepSeek V3 (values in the keys' leading channels). Greedy rollouts of
     * the same prompts against an f32 cache: each token's log-prob within 0.05 up to the first token where the two
     * rollouts part (keys and values differ by bf16 rounding, at most 2^-9 of each value), and the rollouts may part only
     * where the f32 run's top two tokens were within 0.1 of each other in log-prob (checked: the parting token's
     * log-prob in the f32 run is within 0.1 of the bf16 run's pick's).
     */
    @Test
    void aBf16CacheKeepsGreedyRolloutsCloseToTheF32Cache() {
        assertEquals(2 * org.orbitrl.model.kv.BlockPool.bytesPerToken(4, 2, 64, 64, org.orbitrl.kernels.DType.BF16),
                org.orbitrl.model.kv.BlockPool.bytesPerToken(4, 2, 64, 64), "a bf16 token takes half an f32 one");
        for (String arch : List.of("qwen3_moe", "gpt_oss", "deepseek_v3")) {
            try (LoadedModel m = model(arch)) {
                SplittableRandom rnd = new SplittableRandom(77);
                List<Request> reqs = new ArrayList<>();
                for (int i = 0; i < 4; i++) {
                    reqs.add(Request.of("r" + i, randomPrompt(rnd, 5 + rnd.nextInt(20)), SamplingParams.greedy(12)));
                }
                RolloutEngine.Options o = new RolloutEngine.Options(4, 256, 64, 512);
                List<Completion> f32 = new RolloutEngine(m.model(), null, o, null).generate(reqs);
                List<Completion> bf16 = new RolloutEngine(m.model(), null, o.withKvCache(org.orbitrl.kernels.DType.BF16), null)
                        .generate(reqs);
                for (int i = 0; i < reqs.size(); i++) {
                    int[] a = f32.get(i).tokens();
                    int[] b = bf16.get(i).tokens();
                    float[] la = f32.get(i).policyLogprobs();
                    float[] lb = bf16.get(i).policyLogprobs();
                    for (int t = 0; t < Math.min(a.length, b.length); t++) {
                        String what = arch + " request " + i + " token " + t;
                        if (a[t] != b[t]) {
                            assertTrue(Math.abs(la[t] - lb[t]) <= 0.1, what + ": the rollouts part where the picks were not close: f32 "
                                    + a[t] + " (" + la[t] + "), bf16 " + b[t] + " (" + lb[t] + ")");
                            break;
                        }
                        assertTrue(Math.abs(la[t] - lb[t]) <= 0.05, what + ": log-prob " + lb[t] + " over a bf16 cache, " + la[t] + " over f32");
                    }
                }
            }
        }
    }

    @Test
    void aSeededRequestDrawsTheSameTokensWhateverTheBatch() {
        try (LoadedModel m = model("qwen3_moe")) {
            SplittableRandom rnd = new SplittableRandom(11);
            int[] prompt = randomPrompt(rnd, 9);
            SamplingParams p = new SamplingParams(1.0f, 0.95f, 40, 0.01f, 16, List.of(), List.of(), 1234);
            Completion alone = engine(m, 256).generate(List.of(Request.of("x", prompt, p))).get(0);
            List<Request> crowd = new ArrayList<>();
            for (int i = 0; i < 6; i++) {
                crowd.add(Request.of("o" + i, randomPrompt(rnd, 2 + rnd.nextInt(20)), p.withSeed(i)));
                if (i == 3) {
                    crowd.add(Request.of("x", prompt, p));
                }
            }
            Completion inCrowd = engine(m, 256).generate(crowd).stream().filter(c -> c.requestId().equals("x")).findFirst().orElseThrow();
            assertArrayEquals(alone.tokens(), inCrowd.tokens());
            assertArrayEquals(alone.policyLogprobs(), inCrowd.policyLogprobs(), 0f);
        }
    }

    @Test
    void recomputedLogprobsEqualRolloutBitForBit() {
        try (LoadedModel m = model("qwen3_moe")) {
            SplittableRandom rnd = new SplittableRandom(21);
            List<Request> reqs = new ArrayList<>();
            for (int i = 0; i < 5; i++) {
                reqs.add(new Request("g" + i, randomPrompt(rnd, 4 + rnd.nextInt(10)),
                        SamplingParams.sample(1.0f, 1.0f, 12, 100 + i), 3));
            }
            List<Completion> out = engine(m, 256).generate(reqs);
            assertEquals(15, out.size());
            // recompute in different batch compositions: all at once, one by one, reversed
            var all = Recompute.gap(out, Recompute.policyLogprobs(m.model(), out, 1.0f));
            assertTrue(all.exact(), "batched recompute: " + all);
            List<Completion> reversed = new ArrayList<>(out);
            java.util.Collections.reverse(reversed);
            assertTrue(Recompute.gap(reversed, Recompute.policyLogprobs(m.model(), reversed, 1.0f)).exact());
            for (Completion c : out.subList(0, 4)) {
                assertTrue(Recompute.gap(List.of(c), Recompute.policyLogprobs(m.model(), List.of(c), 1.0f)).exact());
            }
            assertTrue(all.tokens() == 15 * 12);
        }
    }

    @Test
    void preemptionUnderATinyCacheChangesNoToken() {
        try (LoadedModel m = model("qwen3_moe")) {
            SplittableRandom rnd = new SplittableRandom(31);
            List<Request> reqs = new ArrayList<>();
            for (int i = 0; i < 6; i++) {
                reqs.add(new Request("p" + i, randomPrompt(rnd, 6 + rnd.nextInt(6)), SamplingParams.sample(0.8f, 0.9f, 20, i), 2));
            }
            List<Completion> roomy = engine(m, 512).generate(reqs);
            RolloutEngine tight = engine(m, 24);   // 96 tokens of cache for 12 samples of up to 31 tokens
            List<Completion> cramped = tight.generate(reqs);
            assertTrue(tight.stats().preemptions() > 0, "the tight cache must force preemption: " + tight.stats());
            for (int i = 0; i < roomy.size(); i++) {
                assertArrayEquals(roomy.get(i).tokens(), cramped.get(i).tokens(), "sample " + i);
                assertArrayEquals(roomy.get(i).policyLogprobs(), cramped.get(i).policyLogprobs(), 0f);
            }
            assertTrue(cramped.stream().mapToInt(Completion::preemptions).sum() > 0);
        }
    }

    /**
     * gpt-oss's sliding-window layers (window 8) keep their rows in a window pool of their own. A pool of 12 blocks of 4
     * for 15 samples crossing the window forces preemptions, and changes no token or log-prob against a window pool as
     * large as the main one; the training forward recomputes every rollout log-prob bit for bit; the samples hold at
     * most 3 window blocks each while they decode, and every block of both pools is back when they are done.
     */
    @Test
    void aTightWindowPoolChangesNoToken() {
        try (LoadedModel m = model("gpt_oss")) {
            SplittableRandom rnd = new SplittableRandom(51);
            List<Request> reqs = new ArrayList<>();
            for (int i = 0; i < 5; i++) {
                reqs.add(new Request("w" + i, randomPrompt(rnd, 4 + rnd.nextInt(11)), SamplingParams.sample(1.0f, 1.0f, 20, 200 + i), 3));
            }
            RolloutEngine roomy = engine(m, 256);
            assertEquals(256, roomy.windowPoolBlocks(), "window blocks 0: as many as the main pool's");
            List<Completion> wide = roomy.generate(reqs);
            RolloutEngine tight = new RolloutEngine(m.model(), null, new RolloutEngine.Options(4, 256, 64, 512,
                    RolloutEngine.Graphs.AUTO, org.orbitrl.kernels.DType.F32, 12), null);
            tight.submit(reqs.get(0));
            tight.step();
            tight.step();
            for (int k = 0; k < 8; k++) {   // 3 samples of one prompt decoding past the window: 3 live blocks each at most
                tight.step();
                assertTrue(12 - tight.freeBlocks()[1] <= 3 * 3, "window blocks held after a step: " + (12 - tight.freeBlocks()[1]));
            }
            while (!tight.idle()) {
                tight.step();
            }
            List<Completion> cramped = tight.generate(reqs);
            assertTrue(tight.stats().preemptions() > 0, "12 window blocks for 15 samples must force preemption: " + tight.stats());
            for (int i = 0; i < wide.size(); i++) {
                assertArrayEquals(wide.get(i).tokens(), cramped.get(i).tokens(), "sample " + i);
                assertArrayEquals(wide.get(i).policyLogprobs(), cramped.get(i).policyLogprobs(), 0f, "sample " + i);
            }
            var gap = Recompute.gap(cramped, Recompute.policyLogprobs(m.model(), cramped, 1.0f));
            assertTrue(gap.exact(), "the training forward against the rollout: " + gap);
            assertArrayEquals(new int[]{256, 12}, tight.freeBlocks(), "every block of both pools is back");
        }
    }

    /**
     * A prompt longer than the window pool holds at once (30 tokens: 8 blocks of 4, window 8) is fed in chunks of 21
     * tokens and rolls out, alone and as a group of three samples, and so do the samples preempted past the pool's
     * length (three windows do not fit 8 blocks): nothing is aborted, and the tokens and log-probs are those of a
     * window pool as large as the main one, whose prompts go in whole.
     */
    @Test
    void aPromptAsLongAsTheWindowPoolRollsOut() {
        try (LoadedModel m = model("gpt_oss")) {
            int[] prompt = randomPrompt(new SplittableRandom(61), 30);
            List<Request> reqs = List.of(new Request("one", prompt, SamplingParams.sample(1.0f, 1.0f, 12, 7), 1),
                    new Request("three", prompt, SamplingParams.sample(1.0f, 1.0f, 12, 8), 3));
            List<Completion> roomy = engine(m, 256).generate(reqs);
            RolloutEngine tight = new RolloutEngine(m.model(), null, new RolloutEngine.Options(4, 256, 64, 512,
                    RolloutEngine.Graphs.AUTO, org.orbitrl.kernels.DType.F32, 8), null);
            List<Completion> got = tight.generate(reqs);
            assertEquals(0, tight.stats().aborted(), "nothing aborted: " + tight.stats());
            assertTrue(tight.stats().preemptions() > 0, "three samples of a 30-token prompt do not decode in 8 window blocks at once");
            for (int i = 0; i < roomy.size(); i++) {
                assertEquals(FinishReason.LENGTH, got.get(i).reason(), "completion " + i);
                assertArrayEquals(roomy.get(i).tokens(), got.get(i).tokens(), "completion " + i);
                assertArrayEquals(roomy.get(i).policyLogprobs(), got.get(i).policyLogprobs(), 0f, "completion " + i);
            }
            assertArrayEquals(new int[]{256, 8}, tight.freeBlocks(), "every block of both pools is back");
        }
    }

    /**
     * A 150-token prompt of three samples going into a window pool by chunks beside a decoding sequence (window 8,
     * blocks of 4, 64 tokens a step). With 10 blocks (chunks of 29) each chunk is cut to the blocks the decode leaves,
     * and nothing is preempted or fed twice: 155 prompt tokens in all. With 7 (chunks of 17) the samples' windows do
     * not all fit beside the decode's, and some are preempted and recomputed. Either way all four completions come
     * back with the tokens and log-probs of a roomy pool, and every block is back.
     */
    @Test
    void aPromptGoingInByChunksBesideADecode() {
        try (LoadedModel m = model("gpt_oss")) {
            SplittableRandom rnd = new SplittableRandom(71);
            List<Request> reqs = List.of(new Request("a", randomPrompt(rnd, 5), SamplingParams.sample(1.0f, 1.0f, 30, 1), 1),
                    new Request("b", randomPrompt(rnd, 150), SamplingParams.sample(1.0f, 1.0f, 4, 2), 3));
            List<Completion> roomy = engine(m, 256).generate(reqs);
            for (int blocks : new int[]{10, 7}) {
                RolloutEngine tight = new RolloutEngine(m.model(), null, new RolloutEngine.Options(4, 256, 64, 64,
                        RolloutEngine.Graphs.AUTO, org.orbitrl.kernels.DType.F32, blocks), null);
                List<Completion> got = tight.generate(reqs);
                RolloutEngine.Stats st = tight.stats();
                if (blocks == 10) {
                    assertEquals(0, st.preemptions(), "10 window blocks: " + st);
                    assertEquals(155, st.prefillTokens(), "10 window blocks: each prompt token fed once: " + st);
                } else {
                    assertTrue(st.preemptions() > 0, "7 window blocks must preempt: " + st);
                }
                assertEquals(4, got.size());
                for (int i = 0; i < roomy.size(); i++) {
                    assertTrue(got.get(i) != null, blocks + " window blocks: completion " + i + " is missing");
                    assertArrayEquals(roomy.get(i).tokens(), got.get(i).tokens(), blocks + " window blocks: completion " + i);
                    assertArrayEquals(roomy.get(i).policyLogprobs(), got.get(i).policyLogprobs(), 0f,
                            blocks + " window blocks: completion " + i);
                }
                assertArrayEquals(new int[]{256, blocks}, tight.freeBlocks(), "every block of both pools is back");
            }
        }
    }

    /**
     * The window pool the planner and the runner size ({@code KvCacheLayout.windowBlocks}) always takes a chunk of at
     * least one token beside a window, whatever the window (8 to 131072 positions), the sequences and their lengths;
     * where it is capped at the main pool's size (a window longer than the sequences) prompts go in whole. A pool too
     * small for its window is refused, naming the sizes.
     */
    @Test
    void everyPlannedWindowPoolTakesAChunk() {
        int bs = org.orbitrl.memory.plan.KvCacheLayout.PAGED_BLOCK_TOKENS;
        for (int window : new int[]{8, 128, 4096, 131072}) {
            for (long sequences : new long[]{1, 4, 256}) {
                for (long tokens : new long[]{48, 512, 5120, 32768}) {
                    int batchTokens = org.orbitrl.memory.plan.KvCacheLayout.engineBatchTokens(sequences);
                    int blocks = org.orbitrl.memory.plan.KvCacheLayout.pagedBlocks(sequences, tokens);
                    int windowBlocks = org.orbitrl.memory.plan.KvCacheLayout.windowBlocks(sequences, tokens, window, batchTokens);
                    org.orbitrl.model.kv.BlockPool pool = new org.orbitrl.model.kv.BlockPool(org.orbitrl.kernels.TensorAllocator.heap(),
                            1, 1, 1, 1, bs, windowBlocks, false, org.orbitrl.kernels.DType.F32, null, window);
                    int chunk = RolloutEngine.prefillChunk(pool, blocks, batchTokens);
                    String what = "window " + window + ", " + sequences + " x " + tokens + " tokens: " + windowBlocks + " of "
                            + blocks + " blocks, chunk " + chunk;
                    assertTrue(chunk >= 1 && chunk <= (windowBlocks >= blocks ? Integer.MAX_VALUE : batchTokens), what);
                    assertEquals(windowBlocks >= blocks, chunk == Integer.MAX_VALUE, what);
                }
            }
        }
        org.orbitrl.model.kv.BlockPool small = new org.orbitrl.model.kv.BlockPool(org.orbitrl.kernels.TensorAllocator.heap(),
                1, 1, 1, 1, 16, 8, false, org.orbitrl.kernels.DType.F32, null, 128);
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> RolloutEngine.prefillChunk(small, 64, 4096));
        assertEquals("a window pool of 8 blocks of 16 cannot hold a window of 128 positions and a new token", e.getMessage());
    }

    /**
     * The engine never runs more than {@code maxRunning} sequences, even when a group's first sample, preempted while
     * its 167-token prompt goes in by chunks (blocks of 1, 10 window blocks), forks its siblings once it is back; and a
     * request of more samples than {@code maxRunning} is aborted at once instead of waiting forever.
     */
    @Test
    void maxRunningHoldsForGroupsAndRefusesTooLargeOnes() throws Exception {
        try (LoadedModel m = model("gpt_oss")) {
            SplittableRandom rnd = new SplittableRandom(2);
            List<Request> reqs = List.of(new Request("g", randomPrompt(rnd, 167), SamplingParams.sample(1.0f, 1.0f, 6, 3), 3),
                    new Request("h", randomPrompt(rnd, 20), SamplingParams.sample(1.0f, 1.0f, 20, 4), 1));
            List<Completion> roomy = engine(m, 512).generate(reqs);
            RolloutEngine tight = new RolloutEngine(m.model(), null, new RolloutEngine.Options(1, 187, 3, 64,
                    RolloutEngine.Graphs.AUTO, org.orbitrl.kernels.DType.F32, 10), null);
            var running = RolloutEngine.class.getDeclaredField("running");
            running.setAccessible(true);
            reqs.forEach(tight::submit);
            List<Completion> got = new ArrayList<>();
            while (!tight.idle()) {
                got.addAll(tight.step());
                assertTrue(((List<?>) running.get(tight)).size() <= 3, "running " + ((List<?>) running.get(tight)).size());
            }
            assertEquals(4, got.size());
            for (Completion r : roomy) {
                Completion c = got.stream().filter(x -> x.requestId().equals(r.requestId()) && x.sample() == r.sample())
                        .findFirst().orElseThrow();
                assertArrayEquals(r.tokens(), c.tokens(), r.requestId() + "/" + r.sample());
            }
            List<Completion> refused = tight.generate(List.of(new Request("big", randomPrompt(rnd, 5),
                    SamplingParams.sample(1.0f, 1.0f, 4, 5), 4)));
            assertEquals(4, refused.size());
            refused.forEach(c -> assertEquals(FinishReason.ABORTED, c.reason()));
        }
    }

    @Test
    void samplesOfOnePromptShareItsBlocks() {
        try (LoadedModel m = model("qwen3")) {
            int[] prompt = randomPrompt(new SplittableRandom(41), 32);   // 8 full blocks of 4
            RolloutEngine shared = engine(m, 256);
            shared.submit(new Request("s", prompt, SamplingParams.sample(1f, 1f, 50, 1), 8));
            shared.step();   // prefill + first token of all 8 samples
            shared.step();   // first decode: each sample writes its own block
            RolloutEngine.Stats st = shared.stats();
            assertEquals(16, st.generatedTokens());
            // 8 shared prompt blocks + one private block per sample, instead of 8 x 9
            assertEquals(256 - (8 + 8), freeBlocks(shared));
        }
    }

    static int freeBlocks(RolloutEngine e) {
        try {
            var f = RolloutEngine.class.getDeclaredField("pool");
            f.setAccessible(true);
            return ((org.orbitrl.model.kv.BlockPool) f.get(e)).freeBlocks();
        } catch (ReflectiveOperationException ex) {
            throw new AssertionError(ex);
        }
    }

    @Test
    void stopTokensStopStringsAndLength() {
        try (LoadedModel m = model("qwen3")) {
            int[] prompt = ints(ref("qwen3", "greedy.prompt"));
            long[] seq = ref("qwen3", "greedy.sequence");
            int third = (int) seq[prompt.length + 2];
            Completion c = engine(m, 64).generate(List.of(Request.of("a", prompt,
                    SamplingParams.greedy(10).withStops(List.of(third), List.of())))).get(0);
            assertEquals(FinishReason.STOP, c.reason());
            assertEquals(3, c.tokens().length);
            TextDecoder dec = ids -> String.join(",", Arrays.stream(ids).mapToObj(String::valueOf).toList());
            String stop = seq[prompt.length + 1] + "," + seq[prompt.length + 2];
            RolloutEngine e = new RolloutEngine(m.model(), null, new RolloutEngine.Options(4, 64, 8, 64), dec);
            Completion s = e.generate(List.of(Request.of("b", prompt, SamplingParams.greedy(10).withStops(List.of(), List.of(stop))))).get(0);
            assertEquals(FinishReason.STOP, s.reason());
            assertEquals(stop, s.stopString());
            assertEquals(3, s.tokens().length);
        }
    }
}
