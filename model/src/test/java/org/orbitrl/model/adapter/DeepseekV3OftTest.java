package org.orbitrl.model.adapter;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DeepseekV3FixtureTest;
import org.orbitrl.model.arch.DeepseekV3Model;
import org.orbitrl.model.arch.Qwen3FixtureTest;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * OFT on every MLA projection of DeepSeek-V3, with seeded random (non-identity) rotations. OFT
 * rotates a layer's input, so the absorbed attention must use the rotated kv_b_proj and hand its
 * gradient back through it: the logits through the latent cache equal the training forward's within
 * 1e-4 and differ from the adapter-free model's; and the gradient of the fixture loss along a
 * seeded random direction of the kv_b_proj and q_b_proj rotations matches a central finite
 * difference (step 1e-3, f32 forward) within 2% relative.
 */
class DeepseekV3OftTest {

    static OftAdapter randomOft(DeepseekV3Model model) {
        var cfg = AdapterConfig.oft(OftSettings.ofBlockSize(4),
                List.of("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"));
        OftAdapter oft = OftAdapter.create(cfg, model, TensorAllocator.heap());
        assertEquals(15, oft.layers().size(), "5 projections in each of 3 layers");
        Random rnd = new Random(7);
        for (var p : oft.params()) {
            Tensor v = p.value();
            float[] x = new float[(int) v.numel()];
            for (int i = 0; i < x.length; i++) {
                x[i] = (float) (rnd.nextGaussian() * 0.3);
            }
            v.copyFrom(Tensor.of(x, v.shape()));
        }
        return oft;
    }

    @Test
    void absorbedCacheFormHonoursOftOnKvB() {
        DeepseekV3Model model = DeepseekV3FixtureTest.load();
        var ref = new TestSafetensors(TestSafetensors.fixtures().resolve("deepseek_v3/reference.safetensors"));
        List<int[]> seqs = FixtureLoss.sequences(ref);
        randomOft(model);
        float[] train = model.forwardTrain(seqs, false).logits().toFloatArray();
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] s : seqs) {
            batch.add(new CausalLM.Segment(s, model.newCache(s.length)));
        }
        float[] cached = model.forward(batch).toFloatArray();
        Qwen3FixtureTest.assertClose("OFT logits, latent cache vs training forward", train, cached, 1e-4f);
        float[] base = ref.get("logits").toFloatArray();
        float moved = 0;
        for (int i = 0; i < base.length; i++) {
            moved = Math.max(moved, Math.abs(base[i] - train[i]));
        }
        assertTrue(moved > 1e-2, "the rotations change the logits (max change " + moved + ")");
    }

    @Test
    void oftGradientThroughTheAbsorbedKvBMatchesFiniteDifferences() {
        DeepseekV3Model model = DeepseekV3FixtureTest.load();
        var lora = new TestSafetensors(TestSafetensors.fixtures().resolve("deepseek_v3/reference_lora.safetensors"));
        List<int[]> seqs = FixtureLoss.sequences(
                new TestSafetensors(TestSafetensors.fixtures().resolve("deepseek_v3/reference.safetensors")));
        OftAdapter oft = randomOft(model);
        var tape = model.forwardTrain(seqs, false);
        for (var p : oft.params()) {
            p.grad().fill(0);
        }
        model.backward(tape, FixtureLoss.dLogits(tape.logits(), lora, seqs));
        Random rnd = new Random(11);
        double analytic = 0;
        List<float[]> dirs = new ArrayList<>();
        List<OftAdapter.Param> chosen = new ArrayList<>();
        for (var p : oft.params()) {
            if (p.name().contains("kv_b_proj") || p.name().contains("q_b_proj")) {
                float[] u = new float[(int) p.value().numel()];
                float[] g = p.grad().toFloatArray();
                for (int i = 0; i < u.length; i++) {
                    u[i] = (float) rnd.nextGaussian();
                    analytic += u[i] * (double) g[i];
                }
                dirs.add(u);
                chosen.add(p);
            }
        }
        double h = 1e-3;
        double up = lossAlong(model, oft, chosen, dirs, h, seqs, lora);
        double down = lossAlong(model, oft, chosen, dirs, -h, seqs, lora);
        double numeric = (up - down) / (2 * h);
        System.out.printf("OFT directional derivative: analytic %.6g, finite difference %.6g%n", analytic, numeric);
        assertTrue(Math.abs(analytic) > 1e-4, "the direction has a gradient");
        assertTrue(Math.abs(analytic - numeric) <= 0.02 * Math.abs(numeric),
                "analytic " + analytic + " vs finite difference " + numeric);
    }

    /** The fixture loss with the chosen parameters moved by {@code step · dir} (restored afterwards). */
    private static double lossAlong(DeepseekV3Model model, OftAdapter oft, List<OftAdapter.Param> params,
                                    List<float[]> dirs, double step, List<int[]> seqs, TestSafetensors ref) {
        List<float[]> saved = new ArrayList<>();
        for (int i = 0; i < params.size(); i++) {
            Tensor v = params.get(i).value();
            float[] x = v.toFloatArray();
            saved.add(x.clone());
            for (int j = 0; j < x.length; j++) {
                x[j] += (float) (step * dirs.get(i)[j]);
            }
            v.copyFrom(Tensor.of(x, v.shape()));
        }
        float[] lg = model.forwardTrain(seqs, false).logits().toFloatArray();
        for (int i = 0; i < params.size(); i++) {
            params.get(i).value().copyFrom(Tensor.of(saved.get(i), params.get(i).value().shape()));
        }
        float[] adv = ref.get("advantages").toFloatArray();
        Tensor mask = ref.get("completion_mask");
        int t = seqs.get(0).length;
        int v = model.vocabSize();
        double denom = 0;
        for (int b = 0; b < seqs.size(); b++) {
            for (int j = 1; j < t; j++) {
                denom += mask.getFloat(b, j);
            }
        }
        double loss = 0;
        for (int b = 0; b < seqs.size(); b++) {
            for (int j = 0; j + 1 < t; j++) {
                int row = (b * t + j) * v;
                double max = Double.NEGATIVE_INFINITY;
                for (int k = 0; k < v; k++) {
                    max = Math.max(max, lg[row + k]);
                }
                double sum = 0;
                for (int k = 0; k < v; k++) {
                    sum += Math.exp(lg[row + k] - max);
                }
                double logp = lg[row + seqs.get(b)[j + 1]] - max - Math.log(sum);
                loss -= adv[b] * logp * mask.getFloat(b, j + 1) / denom;
            }
        }
        return loss;
    }
}
