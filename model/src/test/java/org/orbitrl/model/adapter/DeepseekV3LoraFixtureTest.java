package org.orbitrl.model.adapter;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.model.ReleaseTracking;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DeepseekV3Config;
import org.orbitrl.model.arch.DeepseekV3FixtureTest;
import org.orbitrl.model.arch.DeepseekV3Model;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * PEFT LoRA on DeepSeek-V3 (peft 0.21 over transformers 5.17): the fixture adapter on every MLA
 * projection ({@code q_a_proj}, {@code q_b_proj}, {@code kv_a_proj_with_mqa}, {@code kv_b_proj},
 * {@code o_proj}) and the fused routed-expert parameters. Logits match {@code reference_lora}
 * within 1e-4 absolute, through the training forward and through the latent cache (where the
 * adapted {@code kv_b_proj} is absorbed); gradients of the fixture's loss match every
 * {@code grad.*} tensor within 1e-3 relative (‖ours − ref‖ / ‖ref‖), bit-identical with recompute
 * and with the last layer kept under recompute; the routed experts grouped on the backend (the default) and per expert.
 */
public class DeepseekV3LoraFixtureTest {

    record Setup(DeepseekV3Model model, LoraAdapter adapter, TestSafetensors ref, List<int[]> seqs) {
    }

    static Setup setup() {
        return setup(Backends.cpu());
    }

    /** The fixture model and adapter with weights and adapter tensors in {@code backend}'s memory. */
    static Setup setup(Backend backend) {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v3");
        DeepseekV3Model model = DeepseekV3FixtureTest.load(backend);
        var cfg = AdapterConfig.read(dir.resolve("adapter"));
        var adapter = LoraAdapter.load(cfg, new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model,
                backend.allocator());
        var ref = new TestSafetensors(dir.resolve("reference_lora.safetensors"));
        return new Setup(model, adapter, ref,
                FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors"))));
    }

    @Test
    void loraLogitsMatchPeftInTrainingAndThroughTheCache() {
        Setup s = setup();
        float[] ref = s.ref().get("logits").toFloatArray();
        Qwen3FixtureTest.assertClose("deepseek_v3 lora logits", ref,
                s.model().forwardTrain(s.seqs(), false).logits().toFloatArray(), 1e-4f);
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] q : s.seqs()) {
            batch.add(new CausalLM.Segment(q, s.model().newCache(q.length)));
        }
        Qwen3FixtureTest.assertClose("deepseek_v3 lora logits through the latent cache", ref,
                s.model().forward(batch).toFloatArray(), 1e-4f);
    }

    @Test
    void loraGradientsMatchPeft() {
        Setup s = setup();
        Map<String, float[]> stored = gradients(s, false);
        FixtureLoss.assertGradientsMatch("deepseek_v3", s.ref(), stored, 1e-3);
        Map<String, float[]> recomputed = gradients(setup(), true);
        for (var e : stored.entrySet()) {
            assertArrayEquals(e.getValue(), recomputed.get(e.getKey()), 0f, e.getKey() + " with recompute");
        }
        Setup kept = setup();
        kept.model().setKeptLayers(1);   // the last layer's activations kept, the others recomputed
        Map<String, float[]> partly = gradients(kept, true);
        for (var e : stored.entrySet()) {
            assertArrayEquals(e.getValue(), partly.get(e.getKey()), 0f, e.getKey() + " with the last layer kept");
        }
        Setup perExpert = setup();
        perExpert.model().setGroupedExperts(false);   // the routed experts one at a time, the routing on the host
        FixtureLoss.assertGradientsMatch("deepseek_v3 per expert", perExpert.ref(), gradients(perExpert, false), 1e-3);
    }

    /**
     * Routed experts in INT4 (quantized on load) through active-expert chunks of 1, 3 and 8, grouped (the backend's chunk
     * buffer) and per expert (the two MoE layers sharing the model's one chunk buffer): the LoRA gradients under recompute
     * (each layer's experts dequantized again in its recomputed forward and its backward, after the other layer has used
     * the buffer) are the same bits for every chunk, on either path.
     */
    @Test
    void chunkedInt4ExpertsGiveTheSameGradientsForEveryChunk() {
        for (boolean grouped : new boolean[]{true, false}) {
            chunkedInt4Gradients(grouped);
        }
    }

    private static void chunkedInt4Gradients(boolean grouped) {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v3");
        ModelSpec spec = ConfigLoader.load(dir);
        QuantFormat int4 = QuantFormats.byName("int4-g32");
        Map<String, float[]> first = null;
        for (int chunk : new int[]{1, 3, 8}) {
            Backend backend = Backends.cpu();
            DeepseekV3Model model = DeepseekV3Model.load(DeepseekV3Config.from(spec), spec.mla().ropeInterleave(),
                    spec.quantization(), new TestSafetensors(dir.resolve("model.safetensors")), backend,
                    new Qwen3Model.LoadOptions(w -> Weight.of(int4.quantize(w))));
            model.setGroupedExperts(grouped);
            model.setExpertChunk(chunk);
            var adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                    new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, backend.allocator());
            Setup s = new Setup(model, adapter, new TestSafetensors(dir.resolve("reference_lora.safetensors")),
                    FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors"))));
            Map<String, float[]> grads = gradients(s, true);
            if (first == null) {
                first = grads;
                continue;
            }
            for (var e : first.entrySet()) {
                assertArrayEquals(e.getValue(), grads.get(e.getKey()), 0f, e.getKey() + " with chunks of " + chunk + " against 1"
                        + (grouped ? ", grouped" : ", per expert"));
            }
        }
    }

    /**
     * The layers' tapes (the attention's, the MoE block's and the dense MLP's, the normed inputs) and the attention
     * backward's temporaries are released at their last use: the fixture's LoRA gradients with and without recompute are
     * the same bits whether released tensors are poisoned (NaN) or kept, more than ten tensors a layer are released, and
     * after a step less than a tenth of the activations it allocated are left (28% without recompute when the layer tapes
     * stayed until the collector; 14% with recompute when a recomputed layer's first pass left its temporaries).
     */
    @Test
    void releasesAtLastUseChangeNoGradient() {
        int layers = setup().model().config().layers();
        ReleaseTracking.assertReleasesChangeNoGradient("deepseek_v3", (backend, recompute) -> gradients(setup(backend), recompute),
                10 * layers);
    }

    /**
     * The adapted kv_b_proj's matrix is never made in a forward: its LoRA terms are added per head, so that a forward
     * through the cache (a prefill, then a decode token a sequence) allocates no tensor of the matrix's shape
     * [H·(nope+v), R] or its transpose (4·32 x 16 on the fixture), while the training step's backward, which needs the
     * matrix, does make it (the check sees it); the decode logits are those of the training forward of the same tokens
     * within 1e-5 (the PEFT logits test bounds both against peft).
     */
    @Test
    void theAdaptedKvBIsNeverMergedInAForward() {
        // the fixture: 4 heads, nope 16 + v 16, latent rank 16
        long[] matrix = {4 * (16 + 16), 16};
        long[] image = {16, 4 * (16 + 16)};
        List<String> made = new ArrayList<>();
        TensorAllocator heap = TensorAllocator.heap();
        TensorAllocator recording = (category, dtype, shape) -> {
            if (Arrays.equals(shape, matrix) || Arrays.equals(shape, image)) {
                made.add(Arrays.toString(shape));
            }
            return heap.allocate(category, dtype, shape);
        };
        try (CpuBackend cpu = new CpuBackend(2, recording)) {
            Setup s = setup(cpu);
            List<CausalLM.Segment> prefill = new ArrayList<>();
            List<CausalLM.Segment> decode = new ArrayList<>();
            List<int[]> whole = new ArrayList<>();
            for (int[] q : s.seqs()) {
                KvCache cache = s.model().newCache(q.length);
                prefill.add(new CausalLM.Segment(Arrays.copyOf(q, q.length - 1), cache));
                decode.add(new CausalLM.Segment(new int[]{q[q.length - 1]}, cache));
                whole.add(q);
            }
            s.model().forward(prefill);
            float[] stepped = s.model().forward(decode).toFloatArray();
            assertEquals(List.of(), made, "tensors of kv_b's matrix's shape made by the forwards through the cache");
            float[] trained = s.model().forwardTrain(whole, false).logits().toFloatArray();
            int v = s.model().vocabSize();
            int row = 0;
            for (int i = 0; i < whole.size(); i++) {
                row += whole.get(i).length;
                float[] want = Arrays.copyOfRange(trained, (row - 1) * v, row * v);
                Qwen3FixtureTest.assertClose("sequence " + i + "'s decoded token against the training forward", want,
                        Arrays.copyOfRange(stepped, i * v, (i + 1) * v), 1e-5f);
            }
            gradients(s, false);
            assertTrue(made.contains(Arrays.toString(matrix)), "the backward makes the matrix: " + made);
        }
    }

    static Map<String, float[]> gradients(Setup s, boolean recompute) {
        return FixtureLoss.gradients(s.model(), s.adapter(), s.ref(), s.seqs(), recompute);
    }
}
