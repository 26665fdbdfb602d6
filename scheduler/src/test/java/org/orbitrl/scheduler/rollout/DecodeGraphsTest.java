package org.orbitrl.scheduler.rollout;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.CapturedStep;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.NotCapturableException;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.AdapterSlots;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.DecodeStep;
import org.orbitrl.model.kv.PagedSequence;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Decode steps through the capture/replay path ({@link DecodeGraphs}) on the host backend, where a
 * replay re-runs the captured step under capture checking: on the Qwen3 fixture with a LoRA adapter
 * in two slots, seeded sampling gives exactly (bit for bit) the tokens and log-probs of the eager
 * engine, for batches that shrink through 6, 5, 3, 2, 1 (padded to 8, 4, 2, 1 rows, whose padding
 * must not touch the real rows), across a publication and slot switch; an OFT adapter (its rotations
 * rebuilt inside the captured step from the slot's parameters) decodes through replayed graphs with
 * the eager engine's results bit for bit; and the checking mode throws
 * on an upload inside a captured step, which the eager forward has and the decode-step form has not.
 */
class DecodeGraphsTest {
    static final AdapterConfig CFG = AdapterConfig.lora(4, 8,
            List.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), List.of());
    /** LoRA on the attention and on the fused experts (PEFT's target_parameters), as the qwen3_moe fixture's adapter. */
    static final AdapterConfig MOE_CFG = AdapterConfig.lora(4, 8, List.of("q_proj", "k_proj", "v_proj", "o_proj"),
            List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));

    /** Seeded values in every adapter tensor (LoRA's B starts at zero, which would hide the adapter). */
    static void randomize(Adapter a, long seed, float scale) {
        SplittableRandom rnd = new SplittableRandom(seed);
        for (Adapter.Param p : a.params()) {
            Tensor v = p.value();
            float[] x = new float[Math.toIntExact(v.numel())];
            for (int i = 0; i < x.length; i++) {
                x[i] = (float) (rnd.nextDouble(-1, 1) * scale);
            }
            v.copyFrom(Tensor.of(x, v.shape()));
        }
    }

    /** Runs one engine over the requests, publishing {@code next} as version 1 after {@code publishAt} steps. */
    private static List<Completion> run(RolloutEngine.Graphs graphs, List<Request> reqs, int publishAt, long[] stats) {
        try (LoadedModel m = RolloutEngineTest.model("qwen3"); LoadedModel trainer = RolloutEngineTest.model("qwen3")) {
            AdapterSlots slots = new AdapterSlots(m.targets(),
                    () -> LoraAdapter.create(CFG, m.targets(), m.model().backend().allocator(), 7), 0);
            randomize(slots.active(), 31, 0.2f);
            LoraAdapter next = LoraAdapter.create(CFG, trainer.targets(), trainer.model().backend().allocator(), 8);
            randomize(next, 32, 0.2f);
            List<Completion> done = new ArrayList<>();
            try (RolloutEngine e = new RolloutEngine(m.model(), slots, new RolloutEngine.Options(4, 256, 16, 256, graphs), null)) {
                reqs.forEach(e::submit);
                for (int step = 0; !e.idle(); step++) {
                    if (step == publishAt) {
                        try {
                            slots.publish(next, 1);
                        } catch (InterruptedException ex) {
                            throw new AssertionError(ex);
                        }
                    }
                    done.addAll(e.step());
                }
                RolloutEngine.Stats s = e.stats();
                stats[0] = s.graphSteps();
                stats[1] = s.graphs();
                stats[2] = s.steps();
                assertNull(e.graphsOffReason(), "graphs stay on for the qwen3 decode path");
            }
            done.sort(java.util.Comparator.comparing(Completion::requestId).thenComparingInt(Completion::sample));
            return done;
        }
    }

    @Test
    void replayedDecodeStepsEqualTheEagerEngineAcrossPaddingAndASlotSwitch() {
        SplittableRandom rnd = new SplittableRandom(17);
        List<Request> reqs = new ArrayList<>();
        int[] lengths = {3, 9, 14, 6, 11, 5};
        for (int i = 0; i < lengths.length; i++) {          // ragged: 6 running, then 5, 3, 2, 1 as they finish
            int[] prompt = RolloutEngineTest.randomPrompt(rnd, 2 + rnd.nextInt(9));
            reqs.add(Request.of("r" + i, prompt, SamplingParams.sample(1.0f, 0.95f, lengths[i], 300 + i)));
        }
        long[] eagerStats = new long[3];
        long[] graphStats = new long[3];
        List<Completion> eager = run(RolloutEngine.Graphs.OFF, reqs, 4, eagerStats);
        List<Completion> graph = run(RolloutEngine.Graphs.ON, reqs, 4, graphStats);
        assertEquals(0, eagerStats[0], "the eager engine replays nothing");
        assertEquals(eager.size(), graph.size());
        boolean switched = false;
        for (int i = 0; i < eager.size(); i++) {
            Completion a = eager.get(i);
            Completion b = graph.get(i);
            String what = "completion " + a.requestId() + "/" + a.sample();
            assertArrayEquals(a.tokens(), b.tokens(), what + " tokens, eager vs replayed");
            assertArrayEquals(a.versions(), b.versions(), what + " versions");
            for (int t = 0; t < a.tokens().length; t++) {
                assertEquals(Float.floatToIntBits(a.policyLogprobs()[t]), Float.floatToIntBits(b.policyLogprobs()[t]),
                        what + " token " + t + " policy log-prob: eager " + a.policyLogprobs()[t] + " replayed " + b.policyLogprobs()[t]);
                assertEquals(Float.floatToIntBits(a.sampledLogprobs()[t]), Float.floatToIntBits(b.sampledLogprobs()[t]),
                        what + " token " + t + " sampled log-prob");
            }
            switched |= a.versions()[a.versions().length - 1] == 1 && a.versions()[0] == 0;
        }
        assertTrue(switched, "some sample spans the adapter switch");
        // every step after the first (prefill) is a pure decode: all of them replayed
        assertEquals(graphStats[2] - 1, graphStats[0], "decode steps replayed, of " + graphStats[2] + " steps");
        // batches 6, 5 -> 8; 3 -> 4; 2; 1; each under slot 0 and slot 1 where both served
        assertTrue(graphStats[1] >= 5, "captured steps by batch bucket and adapter slot: " + graphStats[1]);
    }

    @Test
    void anOftAdapterDecodesThroughReplayedGraphsWithTheEagerResults() {
        List<Request> reqs = List.of(Request.of("a", new int[]{4, 8, 15}, SamplingParams.sample(1.0f, 1.0f, 5, 1)),
                Request.of("b", new int[]{16, 23, 42, 7}, SamplingParams.sample(1.0f, 1.0f, 5, 2)));
        List<List<Completion>> out = new ArrayList<>();
        for (RolloutEngine.Graphs g : List.of(RolloutEngine.Graphs.OFF, RolloutEngine.Graphs.ON)) {
            try (LoadedModel m = RolloutEngineTest.model("qwen3")) {
                AdapterConfig oft = AdapterConfig.oft(org.orbitrl.model.adapter.OftSettings.ofBlockSize(8),
                        List.of("q_proj", "v_proj"));
                AdapterSlots slots = new AdapterSlots(m.targets(),
                        () -> org.orbitrl.model.adapter.OftAdapter.create(oft, m.targets(), m.model().backend().allocator()), 0);
                randomize(slots.active(), 41, 0.05f);
                try (RolloutEngine e = new RolloutEngine(m.model(), slots, new RolloutEngine.Options(4, 64, 8, 64, g), null)) {
                    out.add(e.generate(reqs));
                    if (g == RolloutEngine.Graphs.ON) {
                        assertNull(e.graphsOffReason(), "graphs stay on with an OFT adapter");
                        assertEquals(e.stats().steps() - 1, e.stats().graphSteps(), "every decode step after the prefill replays");
                        assertTrue(e.stats().graphs() >= 1);
                    }
                }
            }
        }
        for (int i = 0; i < reqs.size(); i++) {
            assertArrayEquals(out.get(0).get(i).tokens(), out.get(1).get(i).tokens(), "OFT request " + i + " tokens");
            assertArrayEquals(out.get(0).get(i).policyLogprobs(), out.get(1).get(i).policyLogprobs(), 0f, "OFT request " + i);
        }
    }

    /**
     * The qwen3_moe fixture (LoRA on attention and on every expert) on the scalar host backend: where the backend asks
     * for the per-pair MoE forward, every decode step replays a graph and gives the eager engine's tokens and log-probs
     * bit for bit; where it does not, the MoE block reads its per-expert counts on the host, so each batch bucket's steps
     * run eagerly (reported per bucket) while graphs stay on, and the tokens are again the eager engine's.
     */
    @Test
    void moeDecodeStepsReplayWhenTheExpertsRunPerPair() {
        List<Request> reqs = new ArrayList<>();
        SplittableRandom rnd = new SplittableRandom(23);
        int[] lengths = {4, 9, 6, 7, 3};
        for (int i = 0; i < lengths.length; i++) {
            reqs.add(Request.of("m" + i, RolloutEngineTest.randomPrompt(rnd, 2 + rnd.nextInt(6)),
                    SamplingParams.sample(1.0f, 0.95f, lengths[i], 500 + i)));
        }
        for (boolean pairs : new boolean[]{true, false}) {
            List<List<Completion>> out = new ArrayList<>();
            for (RolloutEngine.Graphs g : List.of(RolloutEngine.Graphs.OFF, RolloutEngine.Graphs.ON)) {
                Backend b = new org.orbitrl.kernels.cpu.ScalarBackend() {
                    @Override
                    public boolean moePairs(org.orbitrl.kernels.ExpertWeights experts) {
                        return pairs;
                    }
                };
                try (LoadedModel m = LoadedModel.load(RolloutEngineTest.HF.resolve("qwen3_moe"), b, org.orbitrl.model.BaseFormat.BF16)) {
                    AdapterSlots slots = new AdapterSlots(m.targets(),
                            () -> LoraAdapter.create(MOE_CFG, m.targets(), m.model().backend().allocator(), 7), 0);
                    randomize(slots.active(), 51, 0.2f);
                    assertTrue(slots.active().params().stream().anyMatch(p -> p.name().contains(".experts.")),
                            "the adapter has expert LoRA: " + slots.active().params().size() + " tensors");
                    try (RolloutEngine e = new RolloutEngine(m.model(), slots, new RolloutEngine.Options(4, 128, 8, 128, g), null)) {
                        List<Completion> done = new ArrayList<>(e.generate(reqs));
                        done.sort(java.util.Comparator.comparing(Completion::requestId).thenComparingInt(Completion::sample));
                        out.add(done);
                        if (g == RolloutEngine.Graphs.ON) {
                            assertNull(e.graphsOffReason(), "graphs stay on");
                            RolloutEngine.Stats st = e.stats();
                            if (pairs) {
                                assertTrue(e.eagerBatches().isEmpty(), "every bucket replays: " + e.eagerBatches());
                                assertEquals(st.steps() - 1, st.graphSteps(), "every decode step after the prefill replays");
                            } else {
                                assertEquals(0, st.graphSteps(), "grouped experts read the host: nothing replays");
                                assertTrue(!e.eagerBatches().isEmpty() && e.eagerBatches().values().stream()
                                        .allMatch(r -> r.contains("host read")), "eager buckets, with why: " + e.eagerBatches());
                            }
                        }
                    }
                }
            }
            for (int i = 0; i < reqs.size(); i++) {
                String what = (pairs ? "per-pair" : "grouped") + " experts, request " + i;
                assertArrayEquals(out.get(0).get(i).tokens(), out.get(1).get(i).tokens(), what + " tokens, eager vs graphs");
                assertArrayEquals(out.get(0).get(i).policyLogprobs(), out.get(1).get(i).policyLogprobs(), 0f, what + " log-probs");
            }
        }
    }

    /**
     * A host backend whose grouped expert products take the device offsets ({@link Backend#moeExpertMatmulRouted}, as a
     * device backend's may): the offsets are host memory here, read where they lie, so an MoE decode step with grouped
     * experts captures.
     */
    static final class RoutedScalarBackend extends org.orbitrl.kernels.cpu.ScalarBackend {
        @Override
        public boolean moeExpertMatmulRouted(Tensor xs, org.orbitrl.kernels.ExpertWeights experts, Tensor offsets, float scale,
                                             Tensor ys, boolean accumulate) {
            long[] v = offsets.toLongArray();
            int[] off = new int[v.length];
            for (int i = 0; i < v.length; i++) {
                off[i] = Math.toIntExact(v[i]);
            }
            if (accumulate) {
                moeExpertMatmulAccumulate(xs, experts, off, scale, ys, false, 0);
            } else {
                moeExpertMatmul(xs, experts, off, ys, 0);
            }
            return true;
        }
    }

    /**
     * gpt-oss (sliding-window layers in a window pool of 12 blocks, which forces preemptions; its MoE block grouped on
     * the backend, clamped SwiGLU and expert biases): with a backend whose grouped products take the device offsets,
     * every pure decode step replays a captured step whose tables cover both pools (the window pool's given-back blocks
     * read its block of zeros, padding rows write into each pool's scratch block), and seeded sampling gives the eager
     * engine's tokens and log-probs bit for bit; every block of both pools is back at the end.
     */
    @Test
    void gptOssDecodeStepsReplayOverBothPools() {
        SplittableRandom rnd = new SplittableRandom(61);
        List<Request> reqs = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            reqs.add(new Request("g" + i, RolloutEngineTest.randomPrompt(rnd, 4 + rnd.nextInt(11)),
                    SamplingParams.sample(1.0f, 0.95f, 16 + i, 700 + i), 3));
        }
        List<List<Completion>> out = new ArrayList<>();
        for (RolloutEngine.Graphs g : List.of(RolloutEngine.Graphs.OFF, RolloutEngine.Graphs.ON)) {
            try (LoadedModel m = LoadedModel.load(RolloutEngineTest.HF.resolve("gpt_oss"), new RoutedScalarBackend(),
                    org.orbitrl.model.BaseFormat.BF16)) {
                try (RolloutEngine e = new RolloutEngine(m.model(), null, new RolloutEngine.Options(4, 256, 64, 512, g,
                        org.orbitrl.kernels.DType.F32, 12), null)) {
                    List<Completion> done = new ArrayList<>(e.generate(reqs));
                    done.sort(java.util.Comparator.comparing(Completion::requestId).thenComparingInt(Completion::sample));
                    out.add(done);
                    RolloutEngine.Stats st = e.stats();
                    assertTrue(st.preemptions() > 0, "12 window blocks for 15 samples force preemptions: " + st);
                    assertArrayEquals(new int[]{256, 12}, e.freeBlocks(), "every block of both pools is back");
                    if (g == RolloutEngine.Graphs.ON) {
                        assertNull(e.graphsOffReason(), "graphs stay on over a window pool");
                        assertTrue(e.eagerBatches().isEmpty(), "every bucket replays: " + e.eagerBatches());
                        assertTrue(st.graphSteps() > st.steps() / 2 && st.graphs() >= 2,
                                "decode steps replayed: " + st.graphSteps() + " of " + st.steps() + ", captured " + st.graphs());
                    }
                }
            }
        }
        assertEquals(out.get(0).size(), out.get(1).size());
        for (int i = 0; i < out.get(0).size(); i++) {
            Completion a = out.get(0).get(i);
            Completion b = out.get(1).get(i);
            String what = "completion " + a.requestId() + "/" + a.sample();
            assertArrayEquals(a.tokens(), b.tokens(), what + " tokens, eager vs replayed");
            assertArrayEquals(a.policyLogprobs(), b.policyLogprobs(), 0f, what + " log-probs");
        }
    }

    /**
     * DeepSeek-V3 (multi-head latent attention over a pool that stores one latent entry a token and no values; MoE
     * layers with a shared expert, grouped on the backend): with a backend whose grouped products take the device
     * offsets, every pure decode step after the first replays a captured step whose layers write their entries and
     * attend over the pool with one call each, and seeded sampling with a LoRA adapter on the attention (kv_b_proj
     * included, whose absorbed matrix the step rebuilds from the slot) gives the eager engine's tokens and log-probs bit
     * for bit; every block is back at the end.
     */
    @Test
    void deepseekV3DecodeStepsReplayOverTheLatentPool() {
        AdapterConfig cfg = AdapterConfig.lora(4, 8, List.of("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"),
                List.of());
        SplittableRandom rnd = new SplittableRandom(67);
        List<Request> reqs = new ArrayList<>();
        for (int i = 0; i < 5; i++) {
            reqs.add(new Request("d" + i, RolloutEngineTest.randomPrompt(rnd, 3 + rnd.nextInt(12)),
                    SamplingParams.sample(1.0f, 0.95f, 9 + i, 900 + i), 2));
        }
        List<List<Completion>> out = new ArrayList<>();
        for (RolloutEngine.Graphs g : List.of(RolloutEngine.Graphs.OFF, RolloutEngine.Graphs.ON)) {
            try (LoadedModel m = LoadedModel.load(RolloutEngineTest.HF.resolve("deepseek_v3"), new RoutedScalarBackend(),
                    org.orbitrl.model.BaseFormat.BF16)) {
                AdapterSlots slots = new AdapterSlots(m.targets(),
                        () -> LoraAdapter.create(cfg, m.targets(), m.model().backend().allocator(), 7), 0);
                randomize(slots.active(), 71, 0.2f);
                assertTrue(slots.active().params().stream().anyMatch(p -> p.name().contains("kv_b_proj")),
                        "the adapter changes kv_b_proj");
                try (RolloutEngine e = new RolloutEngine(m.model(), slots, new RolloutEngine.Options(4, 256, 16, 256, g), null)) {
                    List<Completion> done = new ArrayList<>(e.generate(reqs));
                    done.sort(java.util.Comparator.comparing(Completion::requestId).thenComparingInt(Completion::sample));
                    out.add(done);
                    RolloutEngine.Stats st = e.stats();
                    assertArrayEquals(new int[]{256}, e.freeBlocks(), "every block is back");
                    if (g == RolloutEngine.Graphs.ON) {
                        assertNull(e.graphsOffReason(), "graphs stay on over the latent pool");
                        assertTrue(e.eagerBatches().isEmpty(), "every bucket replays: " + e.eagerBatches());
                        assertTrue(st.graphSteps() > st.steps() / 2 && st.graphs() >= 2,
                                "decode steps replayed: " + st.graphSteps() + " of " + st.steps() + ", captured " + st.graphs());
                    }
                }
            }
        }
        assertEquals(10, out.get(0).size());
        assertEquals(out.get(0).size(), out.get(1).size());
        for (int i = 0; i < out.get(0).size(); i++) {
            Completion a = out.get(0).get(i);
            Completion b = out.get(1).get(i);
            String what = "completion " + a.requestId() + "/" + a.sample();
            assertArrayEquals(a.tokens(), b.tokens(), what + " tokens, eager vs replayed");
            assertArrayEquals(a.policyLogprobs(), b.policyLogprobs(), 0f, what + " log-probs");
        }
    }

    /**
     * A host backend whose captured steps report an arena of 1000 bytes a row of their output (as a device's grows with
     * the padded batch), sized by a measuring run as a device backend's, and which counts the arenas live at once.
     */
    static final class ArenaBackend extends org.orbitrl.kernels.cpu.ScalarBackend {
        long live;
        long maxLive;
        int closed;

        @Override
        public CapturedStep captureStep(java.util.function.Supplier<Tensor> step) {
            long bytes = 1000L * step.get().size(0);
            CapturedStep inner = CapturedStep.rerun("arena step", step);
            live += bytes;
            maxLive = Math.max(maxLive, live);
            return new CapturedStep() {
                private boolean open = true;

                @Override
                public Tensor replay() {
                    return inner.replay();
                }

                @Override
                public long arenaBytes() {
                    return bytes;
                }

                @Override
                public void close() {
                    if (open) {
                        open = false;
                        live -= bytes;
                        closed++;
                    }
                }
            };
        }
    }

    /**
     * The captured steps' arenas under a budget (10,000 bytes, arenas of 1,000 a padded row): 8 sequences of different
     * lengths shrink the batch through buckets 8, 4, 2, 1 while their block tables widen, so that more steps are captured
     * than fit. Never more than the budget is live at once (the least recently replayed closed first, before a capture
     * by the arena it is expected to take), steps are closed and captured again, every pure decode step still replays,
     * and seeded sampling gives the eager engine's tokens and log-probs bit for bit; without a budget the same run holds
     * more than the budget, and closing the engine closes every step.
     */
    @Test
    void capturedStepsStayWithinTheirArenaBudget() {
        SplittableRandom rnd = new SplittableRandom(73);
        List<Request> reqs = new ArrayList<>();
        int[] lengths = {2, 5, 9, 14, 20, 27, 33, 40};
        for (int i = 0; i < lengths.length; i++) {
            reqs.add(Request.of("b" + i, RolloutEngineTest.randomPrompt(rnd, 3 + rnd.nextInt(5)),
                    SamplingParams.sample(1.0f, 0.95f, lengths[i], 300 + i)));
        }
        long budget = 10_000;
        List<List<Completion>> out = new ArrayList<>();
        long[] maxLive = new long[2];
        for (int run = 0; run < 3; run++) {
            RolloutEngine.Graphs g = run == 0 ? RolloutEngine.Graphs.OFF : RolloutEngine.Graphs.ON;
            ArenaBackend b = new ArenaBackend();
            try (LoadedModel m = LoadedModel.load(RolloutEngineTest.HF.resolve("qwen3"), b, org.orbitrl.model.BaseFormat.BF16)) {
                RolloutEngine.Options o = new RolloutEngine.Options(4, 256, 16, 256, g).withGraphArenaBytes(run == 2 ? 0 : budget);
                RolloutEngine.Stats st;
                try (RolloutEngine e = new RolloutEngine(m.model(), null, o, null)) {
                    List<Completion> done = new ArrayList<>(e.generate(reqs));
                    done.sort(java.util.Comparator.comparing(Completion::requestId).thenComparingInt(Completion::sample));
                    out.add(done);
                    st = e.stats();
                    if (g == RolloutEngine.Graphs.ON) {
                        assertTrue(e.eagerBatches().isEmpty(), "every bucket replays: " + e.eagerBatches());
                        assertEquals(st.steps() - 1, st.graphSteps(), "every decode step after the prefill replays: " + st);
                        assertEquals(b.live, st.graphArenaBytes(), "the arenas the engine reports are those live");
                    }
                }
                if (g == RolloutEngine.Graphs.ON) {
                    maxLive[run - 1] = b.maxLive;
                    assertEquals(0, b.live, "closing the engine closes every captured step");
                    if (run == 1) {
                        assertTrue(st.graphEvictions() > 0 && b.closed > st.graphs(), "steps closed for the budget: " + st);
                    } else {
                        assertEquals(0, st.graphEvictions(), "no evictions without a budget");
                    }
                }
            }
        }
        assertTrue(maxLive[0] <= budget, "live arenas " + maxLive[0] + " within the budget " + budget);
        assertTrue(maxLive[1] > budget, "without a budget the same run holds " + maxLive[1] + " bytes of arenas");
        for (int run = 1; run < 3; run++) {
            for (int i = 0; i < reqs.size(); i++) {
                String what = (run == 1 ? "budgeted" : "unbounded") + " graphs, request " + i;
                assertArrayEquals(out.get(0).get(i).tokens(), out.get(run).get(i).tokens(), what + " tokens");
                assertArrayEquals(out.get(0).get(i).policyLogprobs(), out.get(run).get(i).policyLogprobs(), 0f, what + " log-probs");
            }
        }
    }

    @Test
    void captureCheckingThrowsOnAnUploadInsideTheStep() {
        try (LoadedModel m = RolloutEngineTest.model("qwen3")) {
            CausalLM model = m.model();
            Backend b = model.backend();
            CapturedStep upload = b.captureStep(() -> b.allocator().upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(new int[]{1, 2}, 2)));
            NotCapturableException e = assertThrows(NotCapturableException.class, upload::replay);
            assertTrue(e.getMessage().startsWith("not capturable: upload of"), e.getMessage());

            CausalLM.CacheGeometry g = model.cacheGeometry();
            BlockPool pool = new BlockPool(b.allocator(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), 4, 16, true);
            PagedSequence seq = new PagedSequence(pool);
            model.forward(List.of(new CausalLM.Segment(new int[]{5, 9, 13}, seq)));          // prefill, eager
            List<CausalLM.Segment> decode = List.of(new CausalLM.Segment(new int[]{21}, seq));
            // the eager forward uploads its ids and positions: not capturable
            assertThrows(NotCapturableException.class, () -> b.captureStep(() -> model.forward(decode)).replay());
            assertEquals(3, seq.length(), "the refused step advanced nothing");
            // the decode-step form runs under the same checks and gives the eager logits (padded 1 -> 2 rows)
            DecodeStep step = model.decodeStep(pool, 2, 4);
            step.prepare(decode);
            float[] replayed = b.captureStep(step::run).replay().slice(0, 0, 1).contiguous().toFloatArray();
            PagedSequence twin = new PagedSequence(pool);
            model.forward(List.of(new CausalLM.Segment(new int[]{5, 9, 13}, twin)));
            float[] eager = model.forward(List.of(new CausalLM.Segment(new int[]{21}, twin))).toFloatArray();
            assertArrayEquals(eager, replayed, 0f, "decode-step logits vs the eager forward");
        }
    }
}
