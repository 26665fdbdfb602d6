package org.orbitrl.model.adapter;

import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.FixtureRuns;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Trainable;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Shared pieces of the adapter fixture tests: the fixture's inputs and its loss gradient. */
final class FixtureLoss {
    private FixtureLoss() {
    }

    /** The fixture's token rows, from {@code input_ids} [B, T] i64. */
    static List<int[]> sequences(TestSafetensors reference) {
        return FixtureRuns.inputRows(reference);
    }

    /**
     * dLoss/dLogits [B·T, V] for loss = −Σ adv[b]·logp(ids[b,t+1] | ids[b,:t+1])·mask[b,t+1] / Σ mask[:,1:],
     * with {@code advantages} [B] and {@code completion_mask} [B, T] from {@code ref}.
     */
    static Tensor dLogits(Tensor logits, TestSafetensors ref, List<int[]> seqs) {
        float[] adv = ref.get("advantages").toFloatArray();
        Tensor mask = ref.get("completion_mask");
        int b = seqs.size();
        int t = seqs.get(0).length;
        int v = logits.size(1);
        double denom = 0;
        for (int i = 0; i < b; i++) {
            for (int j = 1; j < t; j++) {
                denom += mask.getFloat(i, j);
            }
        }
        float[] lg = logits.toFloatArray();
        float[] d = new float[lg.length];
        for (int i = 0; i < b; i++) {
            for (int j = 0; j + 1 < t; j++) {
                float c = (float) (adv[i] * mask.getFloat(i, j + 1) / denom);
                int row = (i * t + j) * v;
                float max = Float.NEGATIVE_INFINITY;
                for (int k = 0; k < v; k++) {
                    max = Math.max(max, lg[row + k]);
                }
                double sum = 0;
                for (int k = 0; k < v; k++) {
                    sum += Math.exp(lg[row + k] - max);
                }
                int target = seqs.get(i)[j + 1];
                for (int k = 0; k < v; k++) {
                    float p = (float) (Math.exp(lg[row + k] - max) / sum);
                    d[row + k] = -c * ((k == target ? 1f : 0f) - p);
                }
            }
        }
        return Tensor.of(d, (long) b * t, v);
    }

    /**
     * One training step's adapter gradients on the model's backend: the training forward, the
     * fixture loss's d logits (on the host), backward; the PEFT-named gradients copied to the host.
     */
    static Map<String, float[]> gradients(Trainable model, LoraAdapter adapter, TestSafetensors ref, List<int[]> seqs,
                                          boolean recompute) {
        TensorAllocator a = model.backend().allocator();
        var tape = model.forwardTrain(seqs, recompute);
        Tensor d = dLogits(a.toHost(tape.logits()), ref, seqs);
        adapter.zeroGrad();
        model.backward(tape, a.upload(MemoryCategory.ACTIVATIONS, d));
        Map<String, float[]> out = new LinkedHashMap<>();
        adapter.peftGradients().forEach((k, g) -> out.put(k, g.toFloatArray()));
        return out;
    }

    /**
     * Checks every {@code grad.*} tensor of {@code ref} against {@code grads} (PEFT names) within
     * {@code limit} relative error ‖ours − ref‖ / ‖ref‖, and that every reference gradient is checked;
     * prints and returns the worst relative error.
     */
    static double assertGradientsMatch(String what, TestSafetensors ref, Map<String, float[]> grads, double limit) {
        int checked = 0;
        double worst = 0;
        for (var e : grads.entrySet()) {
            String refName = "grad." + e.getKey().replace(".weight", ".default.weight");
            float[] r = ref.get(refName).toFloatArray();
            float[] got = e.getValue();
            assertEquals(r.length, got.length, what + " " + refName + " size");
            double diff = 0;
            double norm = 0;
            for (int i = 0; i < r.length; i++) {
                diff += (got[i] - r[i]) * (double) (got[i] - r[i]);
                norm += r[i] * (double) r[i];
            }
            double rel = Math.sqrt(diff / norm);
            assertTrue(norm > 0, refName + " reference is zero");
            assertTrue(rel < limit, what + " " + refName + ": relative error " + rel + " (limit " + limit + ")");
            worst = Math.max(worst, rel);
            checked++;
        }
        long expected = ref.names().stream().filter(n -> n.startsWith("grad.")).count();
        assertEquals(expected, checked, what + ": every grad.* tensor of the fixture is checked");
        System.out.printf("%s: %d LoRA gradients, worst relative error %.3g%n", what, checked, worst);
        return worst;
    }

    /**
     * A LoRA training step on the model's backend against the PEFT reference: the training-forward
     * logits within 1e-4 absolute of {@code ref}'s, and every gradient within 1e-3 relative.
     */
    static void assertLoraStep(String what, Trainable model, LoraAdapter adapter, TestSafetensors ref, List<int[]> seqs) {
        var tape = model.forwardTrain(seqs, false);
        Qwen3FixtureTest.assertClose(what + " lora logits", ref.get("logits").toFloatArray(),
                model.backend().allocator().toHost(tape.logits()).toFloatArray(), 1e-4f);
        assertGradientsMatch(what, ref, gradients(model, adapter, ref, seqs, false), 1e-3);
    }
}
