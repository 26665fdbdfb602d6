package org.orbitrl.model.adapter;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.GptOssFixtureTest;
import org.orbitrl.model.arch.GptOssModel;
import org.orbitrl.model.arch.Qwen3FixtureTest;

import java.nio.file.Path;
import java.util.LinkedHashMap;
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
        Path dir = TestSafetensors.fixtures().resolve("gpt_oss");
        GptOssModel model = GptOssFixtureTest.model();
        var cfg = AdapterConfig.read(dir.resolve("adapter"));
        var adapter = LoraAdapter.load(cfg, new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model,
                TensorAllocator.heap());
        var ref = new TestSafetensors(dir.resolve("reference_lora.safetensors"));
        List<int[]> seqs = FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors")));
        return new Setup(model, adapter, ref, seqs);
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
        int checked = 0;
        double worst = 0;
        for (var e : stored.entrySet()) {
            String refName = "grad." + e.getKey().replace(".weight", ".default.weight");
            float[] ref = s.ref().get(refName).toFloatArray();
            assertEquals(ref.length, e.getValue().length, refName + " size");
            double diff = 0;
            double norm = 0;
            for (int i = 0; i < ref.length; i++) {
                diff += (e.getValue()[i] - ref[i]) * (double) (e.getValue()[i] - ref[i]);
                norm += ref[i] * (double) ref[i];
            }
            double rel = Math.sqrt(diff / norm);
            assertTrue(norm > 0, refName + " reference is zero");
            assertTrue(rel < 1e-3, refName + ": relative error " + rel + " (limit 1e-3)");
            worst = Math.max(worst, rel);
            checked++;
        }
        long expected = s.ref().names().stream().filter(n -> n.startsWith("grad.")).count();
        assertEquals(expected, checked, "every grad.* tensor of the fixture is checked");
        System.out.printf("gpt_oss: %d LoRA gradients, worst relative error %.3g%n", checked, worst);
        Map<String, float[]> recomputed = gradients(setup(), true);
        for (var e : stored.entrySet()) {
            assertArrayEquals(e.getValue(), recomputed.get(e.getKey()), 0f, e.getKey() + " with recompute");
        }
    }

    static Map<String, float[]> gradients(Setup s, boolean recompute) {
        var tape = s.model().forwardTrain(s.seqs(), recompute);
        Tensor d = FixtureLoss.dLogits(tape.logits(), s.ref(), s.seqs());
        s.adapter().zeroGrad();
        s.model().backward(tape, d);
        Map<String, float[]> out = new LinkedHashMap<>();
        s.adapter().peftGradients().forEach((k, g) -> out.put(k, g.toFloatArray()));
        return out;
    }
}
