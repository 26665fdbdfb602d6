package org.orbitrl.model.adapter;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.ReleaseTracking;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.GptOssFixtureTest;
import org.orbitrl.model.arch.GptOssModel;
import org.orbitrl.model.arch.Qwen3FixtureTest;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * gpt-oss PEFT LoRA fixture (peft 0.21 over transformers 5.17): LoRA on q/k/v/o and on the fused
 * expert parameters {@code gate_up_proj} (interleaved gate/up) and {@code down_proj}. Logits match
 * {@code reference_lora} within 1e-4 absolute; the gradients of the fixture's policy-gradient loss
 * match every {@code grad.*} tensor within 1e-3 relative (‖ours − ref‖ / ‖ref‖), through sinks,
 * biases, sliding attention and the clamped SwiGLU; recompute gives bit-identical gradients.
 */
public class GptOssLoraFixtureTest {

    record Setup(GptOssModel model, LoraAdapter adapter, TestSafetensors ref, List<int[]> seqs) {
    }

    static Setup setup() {
        return setup(Backends.cpu());
    }

    /** The fixture model and adapter with weights and adapter tensors in {@code backend}'s memory. */
    static Setup setup(Backend backend) {
        Path dir = TestSafetensors.fixtures().resolve("gpt_oss");
        GptOssModel model = GptOssFixtureTest.model(backend);
        var cfg = AdapterConfig.read(dir.resolve("adapter"));
        var adapter = LoraAdapter.load(cfg, new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model,
                backend.allocator());
        var ref = new TestSafetensors(dir.resolve("reference_lora.safetensors"));
        return new Setup(model, adapter, ref,
                FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors"))));
    }

    @Test
    void loraLogitsMatchPeft() {
        Setup s = setup();
        var tape = s.model().forwardTrain(s.seqs(), false);
        Qwen3FixtureTest.assertClose("gpt_oss lora logits", s.ref().get("logits").toFloatArray(),
                tape.logits().toFloatArray(), 1e-4f);
        // the adapter changes the logits by far more than the tolerance: the check is not vacuous
        var base = new TestSafetensors(TestSafetensors.fixtures().resolve("gpt_oss/reference.safetensors"));
        float[] a = base.get("logits").toFloatArray();
        float[] b = s.ref().get("logits").toFloatArray();
        float maxDiff = 0;
        for (int i = 0; i < a.length; i++) {
            maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i]));
        }
        assertTrue(maxDiff > 1e-2f, "LoRA moves the logits by " + maxDiff);
    }

    @Test
    void exportGivesBackThePeftFileBitForBit() {
        Setup s = setup();
        var file = new TestSafetensors(TestSafetensors.fixtures().resolve("gpt_oss/adapter/adapter_model.safetensors"));
        Map<String, Tensor> exported = s.adapter().peftTensors();
        assertEquals(file.names(), exported.keySet(), "tensor names");
        for (var e : exported.entrySet()) {
            assertArrayEquals(file.get(e.getKey()).shape(), e.getValue().shape(), e.getKey() + " shape");
            assertArrayEquals(file.get(e.getKey()).toFloatArray(), e.getValue().toFloatArray(), 0f, e.getKey());
        }
    }

    @Test
    void loraGradientsMatchPeft() {
        Setup s = setup();
        Map<String, float[]> stored = gradients(s, false);
        FixtureLoss.assertGradientsMatch("gpt_oss", s.ref(), stored, 1e-3);
        Map<String, float[]> recomputed = gradients(setup(), true);
        for (var e : stored.entrySet()) {
            assertArrayEquals(e.getValue(), recomputed.get(e.getKey()), 0f, e.getKey() + " with recompute");
        }
    }

    /**
     * The layers' tapes (the attention's q, k, v and output, the experts' rows, the normed inputs) are released once each
     * layer's backward is issued, and the attention's temporaries without a tape: the LoRA gradients with and without
     * recompute are the same bits whether released tensors are poisoned (NaN) or kept, and after a step less than a tenth
     * of the activations it allocated are left.
     */
    @Test
    void releasesAtLastUseChangeNoGradient() {
        ReleaseTracking.assertReleasesChangeNoGradient("gpt_oss", (backend, recompute) -> gradients(setup(backend), recompute), 0);
    }

    static Map<String, float[]> gradients(Setup s, boolean recompute) {
        return FixtureLoss.gradients(s.model(), s.adapter(), s.ref(), s.seqs(), recompute);
    }
}
