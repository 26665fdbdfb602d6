package org.orbitrl.model.adapter;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.Qwen3Model;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * PEFT LoRA fixtures (peft 0.21 over transformers 5.17): with the fixture adapter, logits match
 * {@code reference_lora} within 1e-4 absolute, and the gradients of the fixture's policy-gradient
 * loss match every {@code grad.*} tensor within 1e-3 relative (‖ours − ref‖ / ‖ref‖), with and
 * without activation recompute (which must give bit-identical gradients), and with the last
 * layer's activations kept under recompute (the rest recomputed: bit-identical too).
 */
public class LoraFixtureTest {

    public record Setup(Qwen3Model model, LoraAdapter adapter, TestSafetensors ref, List<int[]> seqs) {
    }

    public static Setup setup(String arch) {
        Path dir = TestSafetensors.fixtures().resolve(arch);
        var model = Qwen3Model.load(org.orbitrl.model.arch.Qwen3FixtureTest.config(arch),
                new TestSafetensors(dir.resolve("model.safetensors")), Backends.cpu(), Qwen3Model.LoadOptions.full());
        var cfg = AdapterConfig.read(dir.resolve("adapter"));
        var adapter = LoraAdapter.load(cfg, new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model,
                TensorAllocator.heap());
        var ref = new TestSafetensors(dir.resolve("reference_lora.safetensors"));
        var base = new TestSafetensors(dir.resolve("reference.safetensors"));
        Tensor ids = base.get("input_ids");
        List<int[]> seqs = new ArrayList<>();
        for (int b = 0; b < ids.size(0); b++) {
            int[] s = new int[ids.size(1)];
            for (int t = 0; t < s.length; t++) {
                s[t] = (int) ids.getLong(b, t);
            }
            seqs.add(s);
        }
        return new Setup(model, adapter, ref, seqs);
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void loraLogitsMatchPeft(String arch) {
        Setup s = setup(arch);
        var tape = s.model().forwardTrain(s.seqs(), false);
        org.orbitrl.model.arch.Qwen3FixtureTest.assertClose(arch + " lora logits",
                s.ref().get("logits").toFloatArray(), tape.logits().toFloatArray(), 1e-4f);
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void loraGradientsMatchPeft(String arch) {
        Setup s = setup(arch);
        Map<String, float[]> stored = gradients(s, false);
        int checked = 0;
        double worst = 0;
        for (var e : stored.entrySet()) {
            String refName = "grad." + e.getKey().replace(".weight", ".default.weight");
            float[] ref = s.ref().get(refName).toFloatArray();
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
        System.out.printf("%s: %d LoRA gradients, worst relative error %.3g%n", arch, checked, worst);
        Map<String, float[]> recomputed = gradients(setup(arch), true);
        for (var e : stored.entrySet()) {
            assertArrayEquals(e.getValue(), recomputed.get(e.getKey()), 0f, e.getKey() + " with recompute");
        }
        Setup kept = setup(arch);
        kept.model().setKeptLayers(1);   // the fixtures have 2 layers: the first recomputed, the last kept
        Map<String, float[]> partly = gradients(kept, true);
        for (var e : stored.entrySet()) {
            assertArrayEquals(e.getValue(), partly.get(e.getKey()), 0f, e.getKey() + " with the last layer kept");
        }
        assertThrows(IllegalArgumentException.class, () -> kept.model().setKeptLayers(3), "3 of 2 layers");
    }

    /** Runs the fixture loss forward and backward; returns the adapter gradients in PEFT layout. */
    public static Map<String, float[]> gradients(Setup s, boolean recompute) {
        var tape = s.model().forwardTrain(s.seqs(), recompute);
        Tensor logits = tape.logits();
        float[] adv = s.ref().get("advantages").toFloatArray();
        Tensor mask = s.ref().get("completion_mask"); // [B, T]
        int b = s.seqs().size();
        int t = s.seqs().get(0).length;
        int v = logits.size(1);
        double denom = 0;
        for (int i = 0; i < b; i++) {
            for (int j = 1; j < t; j++) {
                denom += mask.getFloat(i, j);
            }
        }
        // loss = -sum adv[b] * logp(ids[b,t+1] | ids[b,:t+1]) * mask[b,t+1] / sum(mask[:,1:])
        float[] lg = logits.toFloatArray();
        float[] d = new float[lg.length];
        for (int i = 0; i < b; i++) {
            for (int j = 0; j + 1 < t; j++) {
                float c = (float) (adv[i] * mask.getFloat(i, j + 1) / denom); // loss = -c * logp(target)
                int row = (i * t + j) * v;
                float max = Float.NEGATIVE_INFINITY;
                for (int k = 0; k < v; k++) {
                    max = Math.max(max, lg[row + k]);
                }
                double sum = 0;
                for (int k = 0; k < v; k++) {
                    sum += Math.exp(lg[row + k] - max);
                }
                int target = s.seqs().get(i)[j + 1];
                for (int k = 0; k < v; k++) {
                    float p = (float) (Math.exp(lg[row + k] - max) / sum);
                    d[row + k] = -c * ((k == target ? 1f : 0f) - p);
                }
            }
        }
        s.adapter().zeroGrad();
        s.model().backward(tape, Tensor.of(d, (long) b * t, v));
        Map<String, float[]> out = new java.util.LinkedHashMap<>();
        s.adapter().peftGradients().forEach((k, g) -> out.put(k, g.toFloatArray()));
        return out;
    }
}
