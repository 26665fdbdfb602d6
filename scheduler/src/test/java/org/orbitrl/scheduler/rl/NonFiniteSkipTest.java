package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/** A NaN or infinite loss or gradient skips the step, says which value, and changes nothing. */
class NonFiniteSkipTest {

    @Test
    void nanGradientSkipsAndLeavesEverythingUntouched() {
        Tensor a = Tensor.of(new float[] {0.5f, -0.25f, 1}, 3);
        Tensor b = Tensor.of(new float[] {2, -3, 0.125f, 4}, 2, 2);
        AdamW opt = new AdamW(AdamWConfig.defaults(), LearningRateSchedule.constant(1e-2),
                List.of(new Parameter("a", a), new Parameter("b", b)), TensorAllocator.heap());
        assertTrue(opt.step(0.7, List.of(Tensor.of(new float[] {0.1f, 0.2f, -0.3f}, 3),
                Tensor.of(new float[] {1, -1, 0.5f, 0.25f}, 2, 2))).applied());
        float[] a1 = a.toFloatArray();
        float[] b1 = b.toFloatArray();
        Map<String, Tensor> s1 = opt.exportState();

        float[] badB = {1, -1, 0.5f, Float.NaN};
        Tensor gb = Tensor.of(badB, 2, 2);
        StepResult r = opt.step(0.7, List.of(Tensor.of(new float[] {0.1f, 0.2f, -0.3f}, 3), gb));
        StepResult.Skipped s = assertInstanceOf(StepResult.Skipped.class, r);
        assertEquals("grad.b", s.offender().tensor());
        assertEquals(3, s.offender().index());
        assertTrue(Double.isNaN(s.offender().value()));
        assertEquals(2, s.step());
        assertUnchanged(opt, a, b, a1, b1, s1);
        RlAssert.bitwise("gradient not modified", badB, gb.toFloatArray());

        StepResult inf = opt.step(0.7, List.of(Tensor.of(new float[] {0.1f, Float.NEGATIVE_INFINITY, 0}, 3),
                Tensor.of(new float[] {1, 1, 1, 1}, 2, 2)));
        NonFiniteValue v = assertInstanceOf(StepResult.Skipped.class, inf).offender();
        assertEquals("grad.a", v.tensor());
        assertEquals(1, v.index());
        assertEquals(Double.NEGATIVE_INFINITY, v.value());
        assertUnchanged(opt, a, b, a1, b1, s1);

        StepResult lossNan = opt.step(Double.POSITIVE_INFINITY, List.of(Tensor.of(new float[] {0.1f, 0.2f, -0.3f}, 3),
                Tensor.of(new float[] {1, 1, 1, 1}, 2, 2)));
        assertEquals("loss", assertInstanceOf(StepResult.Skipped.class, lossNan).offender().tensor());
        assertUnchanged(opt, a, b, a1, b1, s1);

        StepResult ok = opt.step(0.7, List.of(Tensor.of(new float[] {0.1f, 0.2f, -0.3f}, 3),
                Tensor.of(new float[] {1, 1, 1, 1}, 2, 2)));
        assertEquals(2, assertInstanceOf(StepResult.Applied.class, ok).step());
        assertFalse(java.util.Arrays.equals(a1, a.toFloatArray()));
    }

    @Test
    void lossResultsReportNonFiniteValues() {
        float nan = Float.NaN;
        // NaN at a masked-out position is padding: ignored
        PolicyBatch padded = PolicyBatch.of(1, 3, new float[] {-1, -1, nan}, new float[] {-1, -1, nan},
                new float[] {1, 1, nan}, new float[] {1, 1, 0});
        Normaliser n = Normaliser.fixed(2);
        assertTrue(new PpoClipLoss(0.2, 0.2).compute(padded, n).firstNonFinite().isEmpty());
        // NaN in a masked token poisons the loss: reported as "loss"
        PolicyBatch poisoned = padded.withLogp(new float[] {-1, nan, -1});
        NonFiniteValue v = new PpoClipLoss(0.2, 0.2).compute(poisoned, n).firstNonFinite().orElseThrow();
        assertEquals("loss", v.tensor());
        // ratio exp(1000) overflows double on the unclipped side (A < 0): infinite loss and gradient
        PolicyBatch overflow = PolicyBatch.of(1, 3, new float[] {500, -1, -1}, new float[] {-500, -1, -1},
                new float[] {-1, 1, 1}, new float[] {1, 1, 1});
        LossResult r = new PpoClipLoss(0.2, 0.2).compute(overflow, n);
        assertEquals(Double.POSITIVE_INFINITY, r.loss());
        assertEquals(Float.POSITIVE_INFINITY, r.grad()[0]);
        assertEquals("loss", r.firstNonFinite().orElseThrow().tensor());
        // ratio exp(200) is finite in double but its gradient overflows f32: reported with its index
        LossResult f32 = new PpoClipLoss(0.2, 0.2).compute(overflow.withLogp(new float[] {100, -1, -1}), n);
        assertTrue(Double.isFinite(f32.loss()));
        NonFiniteValue gv = f32.firstNonFinite().orElseThrow();
        assertEquals("dloss/dlogp", gv.tensor());
        assertEquals(0, gv.index());
        LossResult gradOnly = new LossResult(1.0, 1, 3, new float[] {0, Float.NaN, 0}, LossStats.EMPTY);
        NonFiniteValue g = gradOnly.firstNonFinite().orElseThrow();
        assertEquals("dloss/dlogp", g.tensor());
        assertEquals(1, g.index());
    }

    private static void assertUnchanged(AdamW opt, Tensor a, Tensor b, float[] a1, float[] b1, Map<String, Tensor> s1) {
        RlAssert.bitwise("a", a1, a.toFloatArray());
        RlAssert.bitwise("b", b1, b.toFloatArray());
        assertEquals(1, opt.stepCount());
        Map<String, Tensor> s = opt.exportState();
        assertEquals(s1.keySet(), s.keySet());
        for (String k : s1.keySet()) {
            if (s1.get(k).dtype() == DType.F32) {
                RlAssert.bitwise(k, s1.get(k).toFloatArray(), s.get(k).toFloatArray());
            } else {
                assertEquals(s1.get(k).getLong(0), s.get(k).getLong(0), k);
            }
        }
    }
}
