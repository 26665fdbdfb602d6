package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/** AdamW against a closed-form two-step computation, a quadratic it must minimise, and its state round trip. */
class AdamWTest {

    private static AdamW adam(AdamWConfig c, LearningRateSchedule s, Parameter... p) {
        return new AdamW(c, s, List.of(p), TensorAllocator.heap());
    }

    @Test
    void twoStepsMatchTheClosedForm() {
        // beta1 0.9, beta2 0.999, eps 1e-8, weight decay 0.1, lr 0.01, no clipping. Element 0:
        // p0 = 0.5, g1 = 0.1:   m = 0.01, v = 1e-5, m^ = 0.1, v^ = 0.01
        //   p1 = 0.5 * (1 - 0.001) - 0.01 * 0.1 / (0.1 + 1e-8) = 0.4895000010
        // g2 = -0.05:           m = 0.9*0.01 + 0.1*(-0.05) = 0.004, v = 0.999e-5 + 0.001*0.0025 = 1.249e-5
        //   m^ = 0.004 / 0.19 = 0.0210526316, v^ = 1.249e-5 / 0.001999 = 0.0062481241, sqrt 0.0790450761
        //   p2 = 0.4895000010 * 0.999 - 0.01 * 0.0210526316 / (0.0790450761 + 1e-8) = 0.4863471309
        // The other elements follow the same formula, evaluated here in double.
        // Tolerance: f32 arithmetic, 2e-7 abs + 1e-6 rel.
        float[] p0 = {0.5f, -1.0f, 2.0f};
        float[][] g = {{0.1f, -0.2f, 0.3f}, {-0.05f, 0.4f, 0.1f}};
        Tensor p = Tensor.of(p0.clone(), 3);
        AdamW opt = adam(new AdamWConfig(0.9, 0.999, 1e-8, 0.1, 0), LearningRateSchedule.constant(0.01),
                new Parameter("w", p));
        for (float[] gi : g) {
            StepResult r = opt.step(1.0, List.of(Tensor.of(gi, 3)));
            assertTrue(r.applied(), r.toString());
        }
        double[] expected = new double[3];
        for (int i = 0; i < 3; i++) {
            double x = p0[i];
            double m = 0;
            double v = 0;
            for (int t = 1; t <= 2; t++) {
                double gt = g[t - 1][i];
                m = 0.9 * m + 0.1 * gt;
                v = 0.999 * v + 0.001 * gt * gt;
                x *= 1 - 0.01 * 0.1;
                x -= 0.01 * (m / (1 - Math.pow(0.9, t))) / (Math.sqrt(v / (1 - Math.pow(0.999, t))) + 1e-8);
            }
            expected[i] = x;
        }
        RlAssert.close("hand value", 0.4863471309, expected[0], 1e-10, 0);
        RlAssert.close("params after 2 steps", expected, p.toFloatArray(), 2e-7, 1e-6);
        assertEquals(2, opt.stepCount());
        Map<String, Tensor> st = opt.exportState();
        RlAssert.close("exp_avg", 0.004, st.get("exp_avg.w").getFloat(0), 1e-9, 1e-6);
        RlAssert.close("exp_avg_sq", 1.249e-5, st.get("exp_avg_sq.w").getFloat(0), 1e-12, 1e-6);
    }

    @Test
    void minimisesAQuadratic() {
        // f(p) = 1/2 sum a_i (p_i - c_i)^2 over two tensors, grad a (p - c); warmup + cosine schedule.
        SplittableRandom r = new SplittableRandom(5);
        float[][] a = new float[2][];
        float[][] c = new float[2][];
        Tensor[] p = {Tensor.of(new float[3], 3), Tensor.of(new float[4], 2, 2)};
        for (int k = 0; k < 2; k++) {
            int n = (int) p[k].numel();
            a[k] = new float[n];
            c[k] = new float[n];
            for (int i = 0; i < n; i++) {
                a[k][i] = (float) r.nextDouble(0.5, 5);
                c[k][i] = (float) r.nextDouble(-2, 2);
                p[k].setFloat((float) r.nextDouble(-2, 2), p[k].rank() == 1 ? new long[] {i} : new long[] {i / 2, i % 2});
            }
        }
        AdamW opt = adam(new AdamWConfig(0.9, 0.999, 1e-8, 0, 0), LearningRateSchedule.warmupCosine(0.1, 20, 400, 0.001),
                new Parameter("a", p[0]), new Parameter("b", p[1]));
        double f0 = 0;
        double f = 0;
        for (int step = 0; step < 400; step++) {
            f = 0;
            List<Tensor> grads = new ArrayList<>();
            for (int k = 0; k < 2; k++) {
                float[] x = p[k].toFloatArray();
                float[] gk = new float[x.length];
                for (int i = 0; i < x.length; i++) {
                    double d = x[i] - c[k][i];
                    f += 0.5 * a[k][i] * d * d;
                    gk[i] = (float) (a[k][i] * d);
                }
                grads.add(Tensor.of(gk, p[k].shape()));
            }
            if (step == 0) {
                f0 = f;
            }
            assertTrue(opt.step(f, grads).applied());
        }
        assertTrue(f < 1e-6 * f0, "f went from " + f0 + " to " + f);
        for (int k = 0; k < 2; k++) {
            RlAssert.close("minimiser " + k, RlAssert.toDouble(c[k]), p[k].toFloatArray(), 1e-3, 0);
        }
    }

    @Test
    void stateRoundTripIsBitwiseAndStepsAreDeterministic() {
        AdamWConfig cfg = new AdamWConfig(0.9, 0.95, 1e-8, 0.05, 0.5);
        LearningRateSchedule s = LearningRateSchedule.warmupCosine(3e-3, 2, 10, 0.1);
        float[][] grads = randomGrads(9, 5, 7);
        // uninterrupted, twice
        Tensor[] full = run(cfg, s, grads, 0, 5, null);
        Tensor[] again = run(cfg, s, grads, 0, 5, null);
        RlAssert.bitwise("rerun", full[0].toFloatArray(), again[0].toFloatArray());
        // 3 steps, export, a fresh optimizer imports, 2 more steps
        AtomicReference<Map<String, Tensor>> saved = new AtomicReference<>();
        Tensor[] first = run(cfg, s, grads, 0, 3, saved);
        Tensor p = Tensor.of(first[0].toFloatArray(), 7);
        AdamW resumed = adam(cfg, s, new Parameter("lora_A", p));
        resumed.importState(copy(saved.get()));
        assertEquals(3, resumed.stepCount());
        Map<String, Tensor> reexported = resumed.exportState();
        for (String k : saved.get().keySet()) {
            assertEquals(saved.get().get(k).dtype(), reexported.get(k).dtype(), k);
            if (saved.get().get(k).dtype() == DType.F32) {
                RlAssert.bitwise("re-export " + k, saved.get().get(k).toFloatArray(), reexported.get(k).toFloatArray());
            }
        }
        for (int t = 3; t < 5; t++) {
            assertTrue(resumed.step(1, List.of(Tensor.of(grads[t], 7))).applied());
        }
        RlAssert.bitwise("resumed params", full[0].toFloatArray(), p.toFloatArray());
        RlAssert.bitwise("resumed exp_avg_sq", full[1].toFloatArray(), resumed.exportState().get("exp_avg_sq.lora_A")
                .toFloatArray());
    }

    @Test
    void importRejectsMismatchedStateNamingTheKey() {
        AdamW opt = adam(AdamWConfig.defaults(), LearningRateSchedule.constant(1e-3), new Parameter("x", Tensor.of(
                new float[] {1, 2}, 2)));
        Map<String, Tensor> good = opt.exportState();
        Map<String, Tensor> missing = new LinkedHashMap<>(good);
        missing.remove("exp_avg_sq.x");
        assertMessage(() -> opt.importState(missing), "missing exp_avg_sq.x");
        Map<String, Tensor> extra = new LinkedHashMap<>(good);
        extra.put("exp_avg.y", Tensor.of(new float[] {1}, 1));
        assertMessage(() -> opt.importState(extra), "unexpected key exp_avg.y");
        Map<String, Tensor> shape = new LinkedHashMap<>(good);
        shape.put("exp_avg.x", Tensor.of(new float[] {1, 2, 3}, 3));
        assertMessage(() -> opt.importState(shape), "exp_avg.x");
    }

    @Test
    void clippingInsideTheStepEqualsClippingBefore() {
        float[][] grads = randomGrads(4, 1, 6);
        for (int i = 0; i < 6; i++) {
            grads[0][i] *= 50; // norm well above 1
        }
        Tensor a = Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 6);
        Tensor b = Tensor.of(new float[] {1, 2, 3, 4, 5, 6}, 6);
        StepResult ra = adam(new AdamWConfig(0.9, 0.999, 1e-8, 0.01, 1.0), LearningRateSchedule.constant(1e-2),
                new Parameter("p", a)).step(0, List.of(Tensor.of(grads[0], 6)));
        Tensor pre = Tensor.of(grads[0], 6);
        double norm = GradientClipping.clipGlobalNorm(List.of(pre), 1.0);
        adam(new AdamWConfig(0.9, 0.999, 1e-8, 0.01, 0), LearningRateSchedule.constant(1e-2), new Parameter("p", b))
                .step(0, List.of(pre));
        StepResult.Applied applied = assertInstanceOf(StepResult.Applied.class, ra);
        assertEquals(norm, applied.gradNorm());
        assertTrue(applied.clipFactor() < 0.1, applied.toString());
        RlAssert.bitwise("clipped step", b.toFloatArray(), a.toFloatArray());
    }

    private static Tensor[] run(AdamWConfig cfg, LearningRateSchedule s, float[][] grads, int from, int to,
                                AtomicReference<Map<String, Tensor>> saveAtEnd) {
        Tensor p = Tensor.of(new float[] {0.3f, -0.2f, 0.1f, 0.9f, -1.1f, 0.05f, 2f}, 7);
        AdamW opt = adam(cfg, s, new Parameter("lora_A", p));
        for (int t = from; t < to; t++) {
            assertTrue(opt.step(1, List.of(Tensor.of(grads[t], 7))).applied());
        }
        if (saveAtEnd != null) {
            saveAtEnd.set(opt.exportState());
        }
        return new Tensor[] {p, opt.exportState().get("exp_avg_sq.lora_A")};
    }

    static float[][] randomGrads(long seed, int steps, int n) {
        SplittableRandom r = new SplittableRandom(seed);
        float[][] g = new float[steps][n];
        for (float[] gi : g) {
            for (int i = 0; i < n; i++) {
                gi[i] = (float) r.nextDouble(-1, 1);
            }
        }
        return g;
    }

    private static Map<String, Tensor> copy(Map<String, Tensor> m) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        m.forEach((k, v) -> out.put(k, v.to(v.dtype())));
        return out;
    }

    private static void assertMessage(org.junit.jupiter.api.function.Executable e, String part) {
        IllegalArgumentException x = assertThrows(IllegalArgumentException.class, e);
        assertTrue(x.getMessage().contains(part), x.getMessage());
    }
}
