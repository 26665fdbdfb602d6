package org.orbitrl.model.adapter;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.GptOssFixtureTest;
import org.orbitrl.model.arch.GptOssModel;

import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Adapters on gpt-oss beyond the PEFT fixture: a fresh LoRA on every attention projection, the
 * router and both fused expert parameters, and an OFT on the attention projections, each with
 * random non-zero parameters. For one trainable tensor of every adapted module of layer 0 (lora_A,
 * or OFT's block parameters; layer 0 is the sliding-window layer and its gradients flow back through
 * every later layer), the backward gradient at its largest coordinate
 * equals the central difference (step 2e-3) of the fixture's policy-gradient loss, computed in
 * double from the f32 logits, within 2e-2 relative + 1e-3 absolute (f32 logit noise over the step
 * bounds the quotient's error near 5e-4). Parameters are kept small (±0.1) so that no step flips
 * a top-k routing decision, which would make the loss jump.
 */
class GptOssAdapterGradientTest {

    @Test
    void loraOnAttentionRouterAndExpertsMatchesFiniteDifferences() {
        GptOssModel model = GptOssFixtureTest.model();
        AdapterConfig cfg = AdapterConfig.lora(2, 4, List.of("q_proj", "k_proj", "v_proj", "o_proj", "router"),
                List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));
        LoraAdapter a = LoraAdapter.create(cfg, model, TensorAllocator.heap(), 3);
        randomize(a, 0.1, 5);
        check(model, a);
    }

    @Test
    void oftOnAttentionMatchesFiniteDifferences() {
        GptOssModel model = GptOssFixtureTest.model();
        AdapterConfig cfg = AdapterConfig.oft(OftSettings.ofBlockSize(8), List.of("q_proj", "k_proj", "v_proj", "o_proj"));
        OftAdapter a = OftAdapter.create(cfg, model, TensorAllocator.heap());
        randomize(a, 0.2, 6);
        check(model, a);
    }

    private static void randomize(Adapter a, double scale, long seed) {
        SplittableRandom rnd = new SplittableRandom(seed);
        for (Adapter.Param p : a.params()) {
            float[] v = new float[Math.toIntExact(p.value().numel())];
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) ((rnd.nextDouble() * 2 - 1) * scale);
            }
            p.value().copyFrom(Tensor.of(v, p.value().shape()));
        }
    }

    private static void check(GptOssModel model, Adapter a) {
        var ref = new TestSafetensors(TestSafetensors.fixtures().resolve("gpt_oss/reference_lora.safetensors"));
        List<int[]> seqs = FixtureLoss.sequences(
                new TestSafetensors(TestSafetensors.fixtures().resolve("gpt_oss/reference.safetensors")));
        var tape = model.forwardTrain(seqs, false);
        a.zeroGrad();
        model.backward(tape, FixtureLoss.dLogits(tape.logits(), ref, seqs));
        int bad = 0;
        int checked = 0;
        StringBuilder sb = new StringBuilder();
        for (Adapter.Param p : a.params()) {
            if (!p.name().contains(".layers.0.") || p.name().contains("lora_B")) {
                continue; // one tensor per adapted module of layer 0: it checks the gradient reaching the module
            }
            float[] g = p.grad().toFloatArray();
            int at = 0;
            for (int i = 1; i < g.length; i++) {
                if (Math.abs(g[i]) > Math.abs(g[at])) {
                    at = i;
                }
            }
            float[] v = p.value().toFloatArray();
            float keep = v[at];
            double h = 2e-3;
            v[at] = (float) (keep + h);
            p.value().copyFrom(Tensor.of(v, p.value().shape()));
            double plus = loss(model, ref, seqs);
            v[at] = (float) (keep - h);
            p.value().copyFrom(Tensor.of(v, p.value().shape()));
            double minus = loss(model, ref, seqs);
            v[at] = keep;
            p.value().copyFrom(Tensor.of(v, p.value().shape()));
            double fd = (plus - minus) / (2 * h);
            assertTrue(g[at] != 0, p.name() + " has a gradient");
            if (!(Math.abs(fd - g[at]) <= 1e-3 + 2e-2 * Math.abs(fd))) {
                bad++;
                sb.append(String.format("  %s[%d]: finite difference %.6g, backward %.6g%n", p.name(), at, fd, g[at]));
            }
            checked++;
        }
        assertTrue(checked >= 4, "checked " + checked + " tensors");
        if (bad > 0) {
            fail(bad + " of " + checked + " adapter tensors off\n" + sb);
        }
    }

    /** The fixture loss, −Σ adv·mask·logp(next) / Σ mask, in double from the model's f32 logits. */
    private static double loss(GptOssModel model, TestSafetensors ref, List<int[]> seqs) {
        List<CausalLM.Segment> batch = seqs.stream().map(x -> new CausalLM.Segment(x, null)).toList();
        float[] lg = model.forward(batch).toFloatArray();
        float[] adv = ref.get("advantages").toFloatArray();
        Tensor mask = ref.get("completion_mask");
        int t = seqs.get(0).length;
        int v = model.vocabSize();
        double denom = 0;
        double sum = 0;
        for (int b = 0; b < seqs.size(); b++) {
            for (int j = 0; j + 1 < t; j++) {
                double m = mask.getFloat(b, j + 1);
                denom += m;
                int row = (b * t + j) * v;
                double max = Double.NEGATIVE_INFINITY;
                for (int k = 0; k < v; k++) {
                    max = Math.max(max, lg[row + k]);
                }
                double z = 0;
                for (int k = 0; k < v; k++) {
                    z += Math.exp(lg[row + k] - max);
                }
                double logp = lg[row + seqs.get(b)[j + 1]] - max - Math.log(z);
                sum += adv[b] * m * logp;
            }
        }
        return -sum / denom;
    }
}
