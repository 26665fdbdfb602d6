package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.CudaBackendPair;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.FixtureRuns;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.spec.ConfigLoader;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4 on the CUDA backend against the transformers 5.17 references of its fixture, as
 * {@link DeepseekV4FixtureTest} checks it on the CPU. The model's linears (attention and compressor
 * projections, the indexer's, the router, the shared and routed experts, the head) and the
 * embedding run on the device with their weights in device memory, and with the default kernels the
 * attention's products too; the compressors, the hyper-connections and the norms run on the host
 * between them.
 * <ul>
 *   <li>Exact mode (f32 arithmetic on the exact bf16 weights): logits (device memory) and every
 *       hidden state within 1e-4 absolute; prefill in chunks and then one token a step through the
 *       cache, both sequences batched, within 1e-4 of the one-shot reference; greedy decoding
 *       reproduces {@code greedy.sequence}.</li>
 *   <li>Routed experts quantized to MXFP4 on load: the device's logits within 1e-4 of the CPU
 *       backend's for the same quantized model (the FP4 products on the device against the host's).</li>
 *   <li>Default kernels (activations rounded to bf16 for products over more than 8 rows): logits within
 *       1e-1 absolute ({@link #DEFAULT_KERNEL_ATOL}).</li>
 * </ul>
 * Skipped, with the reason, where no CUDA device is present.
 */
class CudaDeepseekV4FixtureTest {
    @RegisterExtension
    static final CudaBackendPair GPU = new CudaBackendPair();

    /**
     * The default kernels round each product's activation input to bf16 (relative error 2^-9 a rounding). V4's fixture
     * has 4 layers (DeepSeek-V3's and gpt-oss's 2, bound 6e-2 in {@code CudaArchFixtureTest}), each rounding more
     * products than Qwen3 (q_a, q_b, kv, o_b, both compressors' kv and gate, the indexer's q_b and weights, the router,
     * the shared and routed experts), so the bound is 1e-1 absolute on logits whose largest magnitude is 3.83 (2.6 % of
     * it; worst measured on the H200: 0.0715, 2 of 12,288 logits above 0.06). Exact mode holds 1e-4 (above).
     */
    private static final float DEFAULT_KERNEL_ATOL = 1e-1f;

    private static DeepseekV4Model load(CudaBackend backend) {
        return DeepseekV4Model.load(ConfigLoader.load(DeepseekV4FixtureTest.dir()),
                new TestSafetensors(DeepseekV4FixtureTest.dir().resolve("model.safetensors")), backend);
    }

    private static TestSafetensors reference() {
        return new TestSafetensors(DeepseekV4FixtureTest.dir().resolve("reference.safetensors"));
    }

    private static float[] host(CudaBackend b, Tensor t) {
        return b.toHost(t.contiguous()).toFloatArray();
    }

    @Test
    void exactLogitsAndHiddenStatesMatchTransformers() {
        TestSafetensors ref = reference();
        DeepseekV4Model model = load(GPU.exact());
        assertTrue(model.linearModules().values().stream().allMatch(l -> switch (l.weight()) {
            case Weight.Dense d -> GPU.exact().allocator().owns(d.w());
            case Weight.Quantized q -> GPU.exact().allocator().owns(q.w().codes());
        }), "every linear's weight is device memory");
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] r : DeepseekV4FixtureTest.rows(ref.get("input_ids"))) {
            batch.add(new CausalLM.Segment(r, null));
        }
        Map<Integer, float[]> hidden = new HashMap<>();
        Tensor logits = model.forward(batch, (idx, h) -> hidden.put(idx, host(GPU.exact(), h)));
        assertTrue(GPU.exact().allocator().owns(logits), "logits are device memory");
        for (int i = 0; i <= model.layers(); i++) {
            Qwen3FixtureTest.assertClose("deepseek_v4 hidden_states." + i + " on cuda (exact)",
                    ref.get("hidden_states." + i).toFloatArray(), hidden.get(i), DeepseekV4FixtureTest.ATOL);
        }
        Qwen3FixtureTest.assertClose("deepseek_v4 logits on cuda (exact)", ref.get("logits").toFloatArray(),
                host(GPU.exact(), logits), DeepseekV4FixtureTest.ATOL);
    }

    @Test
    void exactChunkedPrefillAndDecodeThroughTheCacheMatchTransformers() {
        TestSafetensors ref = reference();
        DeepseekV4Model model = load(GPU.exact());
        List<int[]> seqs = DeepseekV4FixtureTest.rows(ref.get("input_ids"));
        int v = model.vocabSize();
        int t = seqs.get(0).length;
        // both sequences in one batch, fed as chunks of 5, 3, then single tokens: the compressors' windows close mid-chunk
        KvCache[] caches = {model.newCache(4), model.newCache(4)};
        float[] got = new float[2 * t * v];
        int at = 0;
        while (at < t) {
            int len = at < 8 ? (at == 0 ? 5 : 3) : 1;
            List<CausalLM.Segment> batch = new ArrayList<>();
            for (int b = 0; b < 2; b++) {
                batch.add(new CausalLM.Segment(java.util.Arrays.copyOfRange(seqs.get(b), at, at + len), caches[b]));
            }
            float[] lg = host(GPU.exact(), model.forward(batch));
            for (int b = 0; b < 2; b++) {
                System.arraycopy(lg, b * len * v, got, (b * t + at) * v, len * v);
            }
            at += len;
        }
        Qwen3FixtureTest.assertClose("deepseek_v4 logits through the cache on cuda (exact)", ref.get("logits").toFloatArray(),
                got, DeepseekV4FixtureTest.ATOL);
        assertEquals(t, caches[0].length());
    }

    @Test
    void greedyDecodingOnTheDeviceReproducesTransformers() {
        TestSafetensors ref = reference();
        DeepseekV4Model model = load(GPU.exact());
        long[] prompt = ref.get("greedy.prompt").toLongArray();
        long[] expected = ref.get("greedy.sequence").toLongArray();
        long[] got = FixtureRuns.greedy(model, prompt, expected.length, model.newCache(4));
        assertArrayEquals(expected, got, "deepseek_v4 greedy sequence on cuda");
    }

    /**
     * The fixture in the released checkpoints' layout (FP8 E4M3 attention and shared-expert linears with 128×128 block
     * scales, E8M0 as V4 ships them or f32, FP4 routed experts; {@link DeepseekV4QuantizedCheckpointTest#export}) in
     * exact mode on the device: the FP8 weights stay FP8 in device memory and are dequantized there; logits within the
     * fixtures' 1e-4 of the CPU's dense model holding the decoded values.
     */
    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(strings = {"ue8m0", "f32"})
    void releasedFp8LayoutOnTheDeviceMatchesTheDecodedDenseModel(String scaleFmt,
                                                                @org.junit.jupiter.api.io.TempDir java.nio.file.Path tmp)
            throws java.io.IOException {
        TestSafetensors ref = reference();
        java.nio.file.Path out = DeepseekV4QuantizedCheckpointTest.export(scaleFmt, tmp);
        float[] dense = DeepseekV4QuantizedCheckpointTest.logits(out.resolve("dense"), ref, Backends.cpu());
        float[] got = DeepseekV4QuantizedCheckpointTest.logits(out.resolve("quantized"), ref, GPU.exact());
        Qwen3FixtureTest.assertClose("deepseek_v4 " + scaleFmt + " FP8 + FP4 on cuda (exact) vs decoded dense on the cpu",
                dense, got, DeepseekV4FixtureTest.ATOL);
    }

    /** The routed experts quantized to MXFP4 on load: the device's FP4 expert products against the host's. */
    @Test
    void mxfp4ExpertsOnTheDeviceMatchTheHost() {
        TestSafetensors ref = reference();
        List<int[]> rows = DeepseekV4FixtureTest.rows(ref.get("input_ids"));
        float[] want;
        try (LoadedModel cpu = LoadedModel.load(DeepseekV4FixtureTest.dir(), Backends.cpu(), BaseFormat.MXFP4)) {
            want = cpu.model().forward(segments(rows)).toFloatArray();
        }
        try (LoadedModel gpu = LoadedModel.load(DeepseekV4FixtureTest.dir(), GPU.exact(), BaseFormat.MXFP4)) {
            int quantized = 0;
            for (var set : gpu.targets().expertSets()) {
                for (var lin : set.gate()) {
                    assertTrue(lin.weight() instanceof Weight.Quantized q && GPU.exact().allocator().owns(q.w().codes()),
                            lin.name() + " is quantized and in device memory");
                    quantized++;
                }
            }
            assertTrue(quantized > 0, "the model has routed experts");
            Qwen3FixtureTest.assertClose("deepseek_v4 MXFP4 experts, cuda (exact) vs cpu", want,
                    host(GPU.exact(), gpu.model().forward(segments(rows))), DeepseekV4FixtureTest.ATOL);
        }
    }

    @Test
    void defaultKernelLogitsMatchTransformers() {
        TestSafetensors ref = reference();
        DeepseekV4Model model = load(GPU.fast());
        float[] want = ref.get("logits").toFloatArray();
        float[] got = host(GPU.fast(), model.forwardTrain(DeepseekV4FixtureTest.rows(ref.get("input_ids")), false).logits());
        double worst = 0;
        double squares = 0;
        for (int i = 0; i < want.length; i++) {
            worst = Math.max(worst, Math.abs(want[i] - got[i]));
            squares += (want[i] - got[i]) * (double) (want[i] - got[i]);
        }
        System.out.printf("deepseek_v4 on cuda (default kernels): worst |logit - transformers| %.4f, rms %.4f%n", worst,
                Math.sqrt(squares / want.length));
        Qwen3FixtureTest.assertClose("deepseek_v4 logits on cuda (default kernels)", want, got, DEFAULT_KERNEL_ATOL);
    }

    private static List<CausalLM.Segment> segments(List<int[]> rows) {
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] r : rows) {
            batch.add(new CausalLM.Segment(r, null));
        }
        return batch;
    }
}
