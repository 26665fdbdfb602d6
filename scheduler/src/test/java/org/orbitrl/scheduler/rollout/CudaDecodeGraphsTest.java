package org.orbitrl.scheduler.rollout;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.AdapterSlots;
import org.orbitrl.model.adapter.OftAdapter;
import org.orbitrl.model.adapter.OftSettings;
import org.orbitrl.model.adapter.LoraAdapter;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Rollout decode steps as CUDA graphs on the GPU (default kernels, not exact mode), Qwen3 fixture
 * with a LoRA adapter in two device slots and a publication + slot switch mid-rollout: seeded
 * sampling through replayed graphs gives the eager engine's tokens and log-probs bit for bit at
 * batches of at most 16 rows (6 sequences padded to 8, then 5, 3, 2, 1: the GEMV kernels compute
 * each row alone, so padding rows cannot touch the real ones); at 20 sequences padded to 32 the
 * products go through cuBLAS, whose kernel choice may depend on the row count, so the log-probs are
 * compared within 1e-4 + 1e-4·|eager| up to a sample's first differing token. The same bit-for-bit
 * check with an OFT adapter on all seven projections, its rotations rebuilt inside the replayed step; and in exact
 * mode, whose products and attention compute each row alone, bit for bit at 20 sequences padded to 32 as well. Also: graphs are
 * counted, their arenas are device memory (activations) and are freed when the engine closes.
 * Skipped where no CUDA device is present.
 */
class CudaDecodeGraphsTest {
    private static CudaBackend gpu;

    @BeforeAll
    static void open() {
        assumeTrue();
        gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), false);
    }

    private static void assumeTrue() {
        org.junit.jupiter.api.Assumptions.assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
        }
    }

    /** Seeded values in every adapter tensor, written through {@code memory} (device or host). */
    static void randomize(Adapter a, TensorAllocator memory, long seed) {
        randomize(a, memory, seed, 0.2f);
    }

    static void randomize(Adapter a, TensorAllocator memory, long seed, float scale) {
        SplittableRandom rnd = new SplittableRandom(seed);
        for (Adapter.Param p : a.params()) {
            Tensor v = p.value();
            float[] x = new float[Math.toIntExact(v.numel())];
            for (int i = 0; i < x.length; i++) {
                x[i] = (float) (rnd.nextDouble(-1, 1) * scale);
            }
            memory.copy(Tensor.of(x, v.shape()), v);
        }
    }

    private record Run(List<Completion> done, RolloutEngine.Stats stats, long activationsFreed) {
    }

    /** OFT on every projection of the fixture: block size 8, the exact Cayley map (rebuilt in each step). */
    private static final AdapterConfig OFT = AdapterConfig.oft(OftSettings.ofBlockSize(8),
            List.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"));

    private static Run run(RolloutEngine.Graphs graphs, List<Request> reqs, int publishAt) {
        return run(graphs, reqs, publishAt, false);
    }

    private static Run run(RolloutEngine.Graphs graphs, List<Request> reqs, int publishAt, boolean oft) {
        return run(gpu, graphs, reqs, publishAt, oft);
    }

    private static Run run(CudaBackend gpu, RolloutEngine.Graphs graphs, List<Request> reqs, int publishAt, boolean oft) {
        return run(gpu, graphs, reqs, publishAt, oft, "qwen3", DecodeGraphsTest.CFG, BaseFormat.BF16);
    }

    /** The engine over the {@code arch} fixture in {@code format}, with a LoRA of {@code lora} (or OFT) in two slots. */
    private static Run run(CudaBackend gpu, RolloutEngine.Graphs graphs, List<Request> reqs, int publishAt, boolean oft, String arch,
                           AdapterConfig lora, BaseFormat format) {
        try (LoadedModel m = LoadedModel.load(RolloutEngineTest.HF.resolve(arch), gpu, format);
             LoadedModel trainer = LoadedModel.load(RolloutEngineTest.HF.resolve(arch), Backends.cpu(), format)) {
            AdapterSlots slots = new AdapterSlots(m.targets(), () -> oft
                    ? OftAdapter.create(OFT, m.targets(), gpu.allocator())
                    : LoraAdapter.create(lora, m.targets(), gpu.allocator(), 7), 0, gpu.allocator());
            float scale = oft ? 0.05f : 0.2f;
            randomize(slots.active(), gpu.allocator(), 31, scale);
            Adapter next = oft ? OftAdapter.create(OFT, trainer.targets(), TensorAllocator.heap())
                    : LoraAdapter.create(lora, trainer.targets(), TensorAllocator.heap(), 8);
            randomize(next, TensorAllocator.heap(), 32, scale);
            List<Completion> done = new ArrayList<>();
            RolloutEngine e = new RolloutEngine(m.model(), slots, new RolloutEngine.Options(4, 512, 32, 512, graphs), null);
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
            assertNull(e.graphsOffReason(), "graphs stay on for the " + arch + " decode path on the GPU");
            RolloutEngine.Stats stats = e.stats();
            gpu.synchronize();
            long before = gpu.allocator().liveBytes(MemoryCategory.ACTIVATIONS);
            e.close();
            long after = gpu.allocator().liveBytes(MemoryCategory.ACTIVATIONS);
            done.sort(Comparator.comparing(Completion::requestId).thenComparingInt(Completion::sample));
            return new Run(done, stats, before - after);
        }
    }

    private static List<Request> requests(int n, long seed) {
        SplittableRandom rnd = new SplittableRandom(seed);
        List<Request> reqs = new ArrayList<>();
        int[] lengths = {3, 9, 14, 6, 11, 5};
        for (int i = 0; i < n; i++) {
            int[] prompt = RolloutEngineTest.randomPrompt(rnd, 2 + rnd.nextInt(9));
            reqs.add(Request.of("r" + (char) ('a' + i), prompt, SamplingParams.sample(1.0f, 0.95f, lengths[i % lengths.length],
                    300 + i)));
        }
        return reqs;
    }

    @Test
    void replayedGraphsEqualTheEagerEngineBitForBitAtSmallBatches() {
        bitForBitAcrossAPublication(false);
    }

    /**
     * OFT: each replay rebuilds the rotations (Cayley map, block-diagonal) from the serving slot's
     * parameters inside the graph, so a publication into the idle slot reaches the replayed steps.
     */
    @Test
    void oftReplayedGraphsEqualTheEagerEngineBitForBit() {
        bitForBitAcrossAPublication(true);
    }

    private static void bitForBitAcrossAPublication(boolean oft) {
        List<Request> reqs = requests(6, 17);
        Run eager = run(RolloutEngine.Graphs.OFF, reqs, 4, oft);
        Run graph = run(RolloutEngine.Graphs.ON, reqs, 4, oft);
        assertEquals(eager.done().size(), graph.done().size());
        boolean switched = false;
        for (int i = 0; i < eager.done().size(); i++) {
            Completion a = eager.done().get(i);
            Completion b = graph.done().get(i);
            String what = "completion " + a.requestId();
            assertArrayEquals(a.tokens(), b.tokens(), what + " tokens, eager vs replayed graph");
            assertArrayEquals(a.versions(), b.versions(), what + " versions");
            for (int t = 0; t < a.tokens().length; t++) {
                assertEquals(Float.floatToIntBits(a.policyLogprobs()[t]), Float.floatToIntBits(b.policyLogprobs()[t]),
                        what + " token " + t + " policy log-prob: eager " + a.policyLogprobs()[t] + " graph " + b.policyLogprobs()[t]);
                assertEquals(Float.floatToIntBits(a.sampledLogprobs()[t]), Float.floatToIntBits(b.sampledLogprobs()[t]),
                        what + " token " + t + " sampled log-prob");
            }
            switched |= a.versions()[0] == 0 && a.versions()[a.versions().length - 1] == 1;
        }
        assertTrue(switched, "some sample spans the adapter switch");
        RolloutEngine.Stats s = graph.stats();
        System.out.printf("cuda decode graphs (%s): %d of %d steps replayed, %d graphs, %d arena bytes (freed on close: %d)%n",
                oft ? "OFT" : "LoRA", s.graphSteps(), s.steps(), s.graphs(), s.graphArenaBytes(), graph.activationsFreed());
        assertEquals(s.steps() - 1, s.graphSteps(), "every decode step after the prefill replays a graph");
        assertTrue(s.graphs() >= 5, "graphs by batch bucket, table width and adapter slot: " + s.graphs());
        assertTrue(s.graphArenaBytes() > 0, "arenas hold the steps' activations");
        assertTrue(graph.activationsFreed() >= s.graphArenaBytes(),
                "closing the engine frees the arenas: " + graph.activationsFreed() + " of " + s.graphArenaBytes() + " bytes");
        assertEquals(0, eager.stats().graphs());
    }

    @Test
    void paddedCublasBatchesStayWithinTolerance() {
        List<Request> reqs = requests(20, 23);
        Run eager = run(RolloutEngine.Graphs.OFF, reqs, -1);
        Run graph = run(RolloutEngine.Graphs.ON, reqs, -1);
        int compared = 0;
        int identical = 0;
        double worst = 0;
        for (int i = 0; i < eager.done().size(); i++) {
            Completion a = eager.done().get(i);
            Completion b = graph.done().get(i);
            assertEquals(a.tokens()[0], b.tokens()[0], "completion " + a.requestId() + ": the first token (from the prefill)");
            for (int t = 0; t < a.tokens().length && a.tokens()[t] == b.tokens()[t]; t++) {
                float x = a.policyLogprobs()[t];
                float y = b.policyLogprobs()[t];
                double err = Math.abs(x - y);
                worst = Math.max(worst, err / (1e-4 + 1e-4 * Math.abs(x)));
                assertTrue(err <= 1e-4 + 1e-4 * Math.abs(x), "completion " + a.requestId() + " token " + t
                        + " policy log-prob: eager " + x + " graph " + y);
                compared++;
                identical += x == y ? 1 : 0;
            }
        }
        System.out.printf("cuda decode graphs at 20 -> 32 rows: %d log-probs compared, %d identical, worst error %.3f of the"
                + " tolerance; %d graphs, %d arena bytes%n", compared, identical, worst, graph.stats().graphs(),
                graph.stats().graphArenaBytes());
        assertTrue(compared >= 20 * 3, "log-probs compared: " + compared);
    }

    /**
     * gpt-oss on the default kernels (sliding-window layers in the window pool, the MoE block's experts per (token, expert)
     * pair with their biases, LoRA on the attention and the fused experts): every pure decode step replays a captured
     * step (no bucket runs eagerly), and the log-probs are the eager engine's within 1e-4 + 1e-4·|value| where the
     * tokens agree (padded rows change cuBLAS's batch shapes, so bits may differ).
     */
    @Test
    void gptOssDecodeStepsReplayOverTheWindowPool() {
        List<Request> reqs = requests(6, 37);
        Run eager = run(gpu, RolloutEngine.Graphs.OFF, reqs, 3, false, "gpt_oss", DecodeGraphsTest.MOE_CFG, BaseFormat.BF16);
        Run graph = run(gpu, RolloutEngine.Graphs.ON, reqs, 3, false, "gpt_oss", DecodeGraphsTest.MOE_CFG, BaseFormat.BF16);
        assertTrue(graph.stats().graphSteps() > graph.stats().steps() / 2 && graph.stats().graphs() >= 2,
                "gpt-oss decode steps replayed: " + graph.stats());
        int compared = 0;
        for (int i = 0; i < eager.done().size(); i++) {
            Completion a = eager.done().get(i);
            Completion b = graph.done().get(i);
            for (int t = 0; t < a.tokens().length && t < b.tokens().length && a.tokens()[t] == b.tokens()[t]; t++) {
                float x = a.policyLogprobs()[t];
                float y = b.policyLogprobs()[t];
                assertTrue(Math.abs(x - y) <= 1e-4 + 1e-4 * Math.abs(x), "gpt-oss completion " + a.requestId() + " token " + t
                        + ": eager " + x + ", graph " + y);
                compared++;
            }
        }
        System.out.printf("gpt-oss decode graphs: %d of %d steps replayed, %d graphs, %d log-probs compared%n",
                graph.stats().graphSteps(), graph.stats().steps(), graph.stats().graphs(), compared);
        assertTrue(compared >= 6 * 3, "log-probs compared: " + compared);
    }

    /** LoRA on DeepSeek-V3's attention, kv_b_proj (whose absorbed matrix each step rebuilds from the slot) included. */
    private static final AdapterConfig MLA_CFG = AdapterConfig.lora(4, 8,
            List.of("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"), List.of());

    /**
     * DeepSeek-V3 (the latent pool: one entry a token, the values its leading channels; an f32 cache, so the per-query
     * kernel reads it through the tables) on the default kernels and in exact mode: every pure decode step after the
     * prefill replays a captured step, the default kernels' log-probs are the eager engine's within 1e-4 + 1e-4·|value|
     * where the tokens agree, exact mode's tokens and log-probs the eager engine's bit for bit.
     */
    @Test
    void deepseekV3DecodeStepsReplayOverTheLatentPool() {
        List<Request> reqs = requests(6, 41);
        Run eager = run(gpu, RolloutEngine.Graphs.OFF, reqs, 3, false, "deepseek_v3", MLA_CFG, BaseFormat.BF16);
        Run graph = run(gpu, RolloutEngine.Graphs.ON, reqs, 3, false, "deepseek_v3", MLA_CFG, BaseFormat.BF16);
        assertEquals(graph.stats().steps() - 1, graph.stats().graphSteps(), "every decode step after the prefill replays: "
                + graph.stats());
        int compared = 0;
        for (int i = 0; i < eager.done().size(); i++) {
            Completion a = eager.done().get(i);
            Completion b = graph.done().get(i);
            for (int t = 0; t < a.tokens().length && t < b.tokens().length && a.tokens()[t] == b.tokens()[t]; t++) {
                float x = a.policyLogprobs()[t];
                float y = b.policyLogprobs()[t];
                assertTrue(Math.abs(x - y) <= 1e-4 + 1e-4 * Math.abs(x), "deepseek_v3 completion " + a.requestId() + " token " + t
                        + ": eager " + x + ", graph " + y);
                compared++;
            }
        }
        assertTrue(compared >= 6 * 3, "log-probs compared: " + compared);
        try (CudaBackend exact = new CudaBackend(0, CudaBackend.defaultCacheDir(), true)) {
            Run exactEager = run(exact, RolloutEngine.Graphs.OFF, reqs, 3, false, "deepseek_v3", MLA_CFG, BaseFormat.BF16);
            Run exactGraph = run(exact, RolloutEngine.Graphs.ON, reqs, 3, false, "deepseek_v3", MLA_CFG, BaseFormat.BF16);
            assertEquals(exactGraph.stats().steps() - 1, exactGraph.stats().graphSteps(), "exact mode: every decode step after"
                    + " the prefill replays: " + exactGraph.stats());
            for (int i = 0; i < exactEager.done().size(); i++) {
                Completion a = exactEager.done().get(i);
                Completion b = exactGraph.done().get(i);
                String what = "deepseek_v3 exact mode, completion " + a.requestId() + "/" + a.sample();
                assertArrayEquals(a.tokens(), b.tokens(), what + " tokens");
                for (int t = 0; t < a.tokens().length; t++) {
                    assertEquals(Float.floatToIntBits(a.policyLogprobs()[t]), Float.floatToIntBits(b.policyLogprobs()[t]),
                            what + " token " + t + ": eager " + a.policyLogprobs()[t] + ", graph " + b.policyLogprobs()[t]);
                }
            }
        }
        System.out.printf("deepseek_v3 decode graphs: %d of %d steps replayed, %d log-probs compared%n",
                graph.stats().graphSteps(), graph.stats().steps(), compared);
    }

    /**
     * Exact mode captures its decode steps too: its kernels compute every row alone (no splits that depend on the batch,
     * the paged attention reading the lengths on the device), so at 20 sequences padded to 32 (where the default kernels
     * go through cuBLAS and differ within a tolerance) the replayed graphs give the eager engine's tokens and log-probs
     * bit for bit, across a publication.
     */
    @Test
    void exactModeReplaysGraphsBitForBitAtPaddedBatches() {
        List<Request> reqs = requests(20, 29);
        try (CudaBackend exact = new CudaBackend(0, CudaBackend.defaultCacheDir(), true)) {
            Run eager = run(exact, RolloutEngine.Graphs.OFF, reqs, 3, false);
            Run graph = run(exact, RolloutEngine.Graphs.ON, reqs, 3, false);
            assertEquals(eager.done().size(), graph.done().size());
            int compared = 0;
            for (int i = 0; i < eager.done().size(); i++) {
                Completion a = eager.done().get(i);
                Completion b = graph.done().get(i);
                String what = "exact mode, completion " + a.requestId() + "/" + a.sample();
                assertArrayEquals(a.tokens(), b.tokens(), what + " tokens, eager vs replayed graph");
                for (int t = 0; t < a.tokens().length; t++) {
                    assertEquals(Float.floatToIntBits(a.policyLogprobs()[t]), Float.floatToIntBits(b.policyLogprobs()[t]),
                            what + " token " + t + " policy log-prob: eager " + a.policyLogprobs()[t] + " graph " + b.policyLogprobs()[t]);
                    compared++;
                }
            }
            RolloutEngine.Stats s = graph.stats();
            System.out.printf("exact-mode decode graphs at 20 -> 32 rows: %d log-probs bit for bit, %d of %d steps replayed,"
                    + " %d graphs%n", compared, s.graphSteps(), s.steps(), s.graphs());
            assertEquals(s.steps() - 1, s.graphSteps(), "every exact-mode decode step after the prefill replays a graph");
            assertTrue(compared >= 20 * 3, "log-probs compared: " + compared);
        }
    }

    /**
     * Exact mode on the qwen3_moe fixture (INT4 experts; LoRA of rank 8 on the attention and on the fused experts, so every
     * expert product, the LoRA's included, runs on the tensor cores): the grouped experts take their per-expert offsets on
     * the device ({@code Backend#moeExpertMatmulRouted}), so these decode steps are captured as well (they read the counts
     * on the host before, and ran eagerly), and the replayed graphs give the eager engine's tokens and log-probs bit for
     * bit at 6 sequences (padded to 8) and at 20 (padded to 32), across a publication.
     */
    @Test
    void exactModeMoeStepsReplayAsGraphsBitForBit() {
        AdapterConfig lora = AdapterConfig.lora(8, 16, List.of("q_proj", "k_proj", "v_proj", "o_proj"),
                List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));
        try (CudaBackend exact = new CudaBackend(0, CudaBackend.defaultCacheDir(), true)) {
            for (int n : new int[]{6, 20}) {
                List<Request> reqs = requests(n, 41 + n);
                Run eager = run(exact, RolloutEngine.Graphs.OFF, reqs, 3, false, "qwen3_moe", lora, BaseFormat.INT4);
                Run graph = run(exact, RolloutEngine.Graphs.ON, reqs, 3, false, "qwen3_moe", lora, BaseFormat.INT4);
                assertEquals(eager.done().size(), graph.done().size());
                int compared = 0;
                for (int i = 0; i < eager.done().size(); i++) {
                    Completion a = eager.done().get(i);
                    Completion b = graph.done().get(i);
                    String what = "exact mode qwen3_moe, " + n + " sequences, completion " + a.requestId() + "/" + a.sample();
                    assertArrayEquals(a.tokens(), b.tokens(), what + " tokens, eager vs replayed graph");
                    assertArrayEquals(a.versions(), b.versions(), what + " versions");
                    for (int t = 0; t < a.tokens().length; t++) {
                        assertEquals(Float.floatToIntBits(a.policyLogprobs()[t]), Float.floatToIntBits(b.policyLogprobs()[t]),
                                what + " token " + t + " policy log-prob: eager " + a.policyLogprobs()[t] + " graph "
                                        + b.policyLogprobs()[t]);
                        compared++;
                    }
                }
                RolloutEngine.Stats s = graph.stats();
                System.out.printf("exact-mode qwen3_moe decode graphs at %d sequences: %d log-probs bit for bit, %d of %d steps"
                        + " replayed, %d graphs%n", n, compared, s.graphSteps(), s.steps(), s.graphs());
                assertEquals(s.steps() - 1, s.graphSteps(), "every exact-mode MoE decode step after the prefill replays a graph");
                assertTrue(compared >= n * 3, "log-probs compared: " + compared);
            }
        }
    }

    /**
     * Dependent launches with weight loads ahead of their waits ({@code -Dorbit.cuda.gemvPrologue=on} and {@code
     * -Dorbit.cuda.downPrologue=on} under {@code CudaBackend.dependentLaunches(true)}: o and the LM head, {@code
     * bgemv_pre1}, and the norm-folded q/k/v read their weights while the kernels before them run, and so does the routed
     * experts' down launch, with its ids and its LoRA's A product between it and the gate/up launch) change no value: on
     * the qwen3_moe fixture (INT4 experts, LoRA on q and on the fused experts, so that o is a plain product), the replayed
     * graphs and the eager engine each give the tokens and log-probs of their run with neither prologue bit for bit, at 1
     * sequence and at 6 (whose one-row steps are their tails), with the plain few-pair down kernel left out of the
     * prologue run (so that a down launch that declined the prologue would change the bits). A one-sequence step's
     * capture takes dependent launches either way ({@code orbit.cuda.pdlOneRow}); what differs there is the prologues
     * alone.
     */
    @Test
    void prologueProductsUnderDependentLaunchesGiveTheSameBits() {
        org.junit.jupiter.api.Assumptions.assumeTrue(gpu.dependentLaunchesSupported(), "dependent launches need sm_90 or newer");
        AdapterConfig lora = AdapterConfig.lora(8, 16, List.of("q_proj"), List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));
        for (int n : new int[]{1, 6}) {
            List<Request> reqs = requests(n, 61 + n);
            for (RolloutEngine.Graphs graphs : new RolloutEngine.Graphs[]{RolloutEngine.Graphs.ON, RolloutEngine.Graphs.OFF}) {
                Run base;
                Run dependent;
                String[] keys = {"orbit.cuda.gemvPrologue", "orbit.cuda.downPrologue", "orbit.cuda.omitKernels"};
                String[] was = new String[keys.length];
                for (int i = 0; i < keys.length; i++) {
                    was[i] = System.getProperty(keys[i]);
                }
                System.setProperty(keys[0], "off");
                System.setProperty(keys[1], "off");
                try {
                    base = run(gpu, graphs, reqs, 3, false, "qwen3_moe", lora, BaseFormat.INT4);
                    gpu.dependentLaunches(true);
                    System.setProperty(keys[0], "on");
                    System.setProperty(keys[1], "on");
                    // every few-pair down launch must be the prologue form: the plain one left out would change the bits
                    System.setProperty(keys[2], "^qgemv_down_combine_lora_int4$");
                    dependent = run(gpu, graphs, reqs, 3, false, "qwen3_moe", lora, BaseFormat.INT4);
                } finally {
                    for (int i = 0; i < keys.length; i++) {
                        if (was[i] == null) {
                            System.clearProperty(keys[i]);
                        } else {
                            System.setProperty(keys[i], was[i]);
                        }
                    }
                    gpu.dependentLaunches(false);
                }
                String what = "dependent prologue products, graphs " + graphs + ", " + n + " sequences";
                assertEquals(base.done().size(), dependent.done().size(), what);
                for (int i = 0; i < base.done().size(); i++) {
                    Completion a = base.done().get(i);
                    Completion b = dependent.done().get(i);
                    assertArrayEquals(a.tokens(), b.tokens(), what + ", completion " + a.requestId() + " tokens");
                    for (int t = 0; t < a.tokens().length; t++) {
                        assertEquals(Float.floatToIntBits(a.policyLogprobs()[t]), Float.floatToIntBits(b.policyLogprobs()[t]),
                                what + ", completion " + a.requestId() + " token " + t + ": without " + a.policyLogprobs()[t]
                                        + ", with " + b.policyLogprobs()[t]);
                    }
                }
                System.out.printf("%s: %d completions bit for bit%n", what, base.done().size());
            }
        }
    }
}
