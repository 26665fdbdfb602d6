package org.orbitrl.scheduler.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.CapturedStep;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.DecodeStep;
import org.orbitrl.model.kv.PagedDecode;
import org.orbitrl.model.kv.PagedSequence;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A one-sequence decode step's Qwen3-MoE layers as one launch each ({@link CudaBackend#decodeLayer}) against the same
 * layers through their separate operations (without {@code -Dorbit.cuda.decodeLayer=on}, their decode attention the f32 kernels
 * rather than the tensor-core ones, which round q and the probabilities to bf16), on the H200: the transformers fixture
 * with INT4 experts (its own norm weights, 4 heads over 2 kv heads of 16) with f32 and bf16 caches, and two layers of
 * Qwen3-30B-A3B's real widths (hidden 2048, 32 / 4 heads of 128, 128 experts of 768, top 8) after a prompt of 2200 keys,
 * so that every attention split walks several key tiles. Both ways decode the same tokens on forks of one prefilled
 * sequence; the logits agree within 1e-4 of their largest magnitude (f32 sums in other orders; the bf16 cache rounds
 * the same values both ways), and the launches counted show that every layer of every step took the one launch. A step
 * captured as a graph and replayed equals the eager step bit for bit. Skipped where no CUDA device is present.
 */
class CudaDecodeLayerTest {
    private static final Path HF = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf");
    private static final String SWITCH = "orbit.cuda.decodeLayer";
    private static final double TOLERANCE = 1e-4;
    private static CudaBackend gpu;

    @BeforeAll
    static void open() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        // the separate operations' decode attention in f32 (the tensor-core kernels round q and the probabilities to bf16)
        System.setProperty("orbit.cuda.pagedMma", "off");
        try {
            gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), false);
        } finally {
            System.clearProperty("orbit.cuda.pagedMma");
        }
        System.setProperty(SWITCH, "on");
    }

    @AfterAll
    static void close() {
        System.clearProperty(SWITCH);
        if (gpu != null) {
            gpu.close();
        }
    }

    @Test
    void fixtureLayersInOneLaunchMatchTheirOperations() {
        try (LoadedModel m = LoadedModel.load(HF.resolve("qwen3_moe"), gpu, BaseFormat.INT4)) {
            for (DType kv : new DType[]{DType.F32, DType.BF16}) {
                double worst = compare(m.model(), kv, 21, 12, 256, 3);
                System.out.printf("qwen3_moe fixture, INT4 experts, %s cache: worst |Δ logit| %.3g of the largest%n", kv, worst);
            }
        }
    }

    @Test
    void realWidthLayersInOneLaunchMatchTheirOperations() throws Exception {
        DecoderConfig c = realWidth(2, 4096);
        Qwen3Model model = Qwen3Model.load(c, new RandomQwen3Moe(c, 11), gpu, Qwen3Model.LoadOptions.full());
        double worst = compare(model, DType.BF16, 2200, 6, c.vocab(), 7);
        System.out.printf("Qwen3-30B-A3B widths, 2 layers, 2200 keys, bf16 cache: worst |Δ logit| %.3g of the largest%n", worst);
    }

    @Test
    void aCapturedStepEqualsTheEagerStepBitForBit() {
        try (LoadedModel m = LoadedModel.load(HF.resolve("qwen3_moe"), gpu, BaseFormat.INT4)) {
            Qwen3Model model = (Qwen3Model) m.model();
            CausalLM.CacheGeometry g = model.cacheGeometry();
            BlockPool pool = new BlockPool(gpu.allocator(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), 16, 32, true, DType.BF16);
            SplittableRandom r = new SplittableRandom(9);
            try (PagedSequence base = prefilled(model, pool, r, 17, 256)) {
                PagedSequence eager = base.fork();
                PagedSequence replayed = base.fork();
                try (eager; replayed) {
                    DecodeStep step = model.decodeStep(pool, 1, PagedDecode.tableWidth(8));
                    CapturedStep captured = null;
                    long before = gpu.decodeLayerLaunches();
                    try {
                        for (int s = 0; s < 6; s++) {
                            int token = r.nextInt(256);
                            float[] want = host(model.forward(List.of(new CausalLM.Segment(new int[]{token}, eager))));
                            List<CausalLM.Segment> segs = List.of(new CausalLM.Segment(new int[]{token}, replayed));
                            step.prepare(segs);
                            if (captured == null) {
                                captured = gpu.captureStep(step::run);
                            }
                            float[] got = host(captured.replay());
                            step.finish(segs);
                            assertArrayEquals(want, got, "step " + s + ": the replayed graph's logits against the eager step's");
                        }
                    } finally {
                        if (captured != null) {
                            captured.close();
                        }
                    }
                    assertTrue(gpu.decodeLayerLaunches() - before >= 6L * g.layers(),
                            "the eager steps' layers each took the one launch: " + (gpu.decodeLayerLaunches() - before));
                }
            }
        }
    }

    /**
     * The worst |Δ| over {@code steps} decode steps of the fused layers against the separate operations, over the largest
     * |logit| of that step; fails beyond {@link #TOLERANCE} or where a layer did not take the launch.
     */
    private static double compare(CausalLM model, DType kv, int prompt, int steps, int vocab, long seed) {
        CausalLM.CacheGeometry g = model.cacheGeometry();
        int blocks = 2 * ((prompt + steps) / 16 + 2) + 4;
        BlockPool pool = new BlockPool(gpu.allocator(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), 16, blocks, false, kv);
        SplittableRandom r = new SplittableRandom(seed);
        double worst = 0;
        try (PagedSequence base = prefilled(model, pool, r, prompt, vocab)) {
            PagedSequence fused = base.fork();
            PagedSequence apart = base.fork();
            try (fused; apart) {
                for (int s = 0; s < steps; s++) {
                    int token = r.nextInt(vocab);
                    float[] want;
                    System.clearProperty(SWITCH);
                    try {
                        long before = gpu.decodeLayerLaunches();
                        want = host(model.forward(List.of(new CausalLM.Segment(new int[]{token}, apart))));
                        assertEquals(before, gpu.decodeLayerLaunches(), "without " + SWITCH + "=on no layer takes the launch");
                    } finally {
                        System.setProperty(SWITCH, "on");
                    }
                    long before = gpu.decodeLayerLaunches();
                    float[] got = host(model.forward(List.of(new CausalLM.Segment(new int[]{token}, fused))));
                    assertEquals(before + g.layers(), gpu.decodeLayerLaunches(), "step " + s + ": every layer took the one launch");
                    double largest = 0;
                    double diff = 0;
                    for (int i = 0; i < want.length; i++) {
                        largest = Math.max(largest, Math.abs(want[i]));
                        diff = Math.max(diff, Math.abs(got[i] - want[i]));
                    }
                    assertTrue(largest > 0, "step " + s + ": logits all zero");
                    worst = Math.max(worst, diff / largest);
                    assertTrue(diff <= TOLERANCE * largest, String.format("step %d (%s cache): |Δ logit| %.3g against the largest %.3g",
                            s, kv, diff, largest));
                }
            }
        }
        return worst;
    }

    private static PagedSequence prefilled(CausalLM model, BlockPool pool, SplittableRandom r, int length, int vocab) {
        PagedSequence s = new PagedSequence(pool);
        int[] prompt = new int[length];
        for (int i = 0; i < length; i++) {
            prompt[i] = r.nextInt(vocab);
        }
        gpu.allocator().release(model.forward(List.of(new CausalLM.Segment(prompt, s))));
        return s;
    }

    private static float[] host(Tensor logits) {
        float[] v = gpu.toHost(logits).toFloatArray();
        gpu.allocator().release(logits);
        return v;
    }

    /** Qwen3-30B-A3B's widths (the transformers fixture's config with its sizes replaced) at {@code layers} layers, a small vocabulary. */
    private static DecoderConfig realWidth(int layers, int vocab) throws Exception {
        ObjectMapper json = new ObjectMapper();
        ObjectNode c = (ObjectNode) json.readTree(HF.resolve("qwen3_moe/config.json").toFile());
        c.put("hidden_size", 2048);
        c.put("num_attention_heads", 32);
        c.put("num_key_value_heads", 4);
        c.put("head_dim", 128);
        c.put("moe_intermediate_size", 768);
        c.put("intermediate_size", 6144);
        c.put("num_local_experts", 128);
        c.put("num_experts", 128);
        c.put("num_experts_per_tok", 8);
        c.put("num_hidden_layers", layers);
        c.put("vocab_size", vocab);
        c.put("max_position_embeddings", 4096);
        c.with("rope_parameters").put("rope_theta", 1_000_000.0);
        Path dir = Files.createTempDirectory("qwen3-moe-real-width");
        dir.toFile().deleteOnExit();
        Path f = dir.resolve("config.json");
        json.writeValue(f.toFile(), c);
        f.toFile().deleteOnExit();
        return DecoderConfig.from(ConfigLoader.load(f));
    }
}
