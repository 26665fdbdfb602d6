package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;

/** Global-norm clipping on a hand-computed case. */
class GradientClippingTest {

    @Test
    void clipsToTheGlobalNormAndReturnsThePreClipNorm() {
        // grads [3, 4] and [[12]]: norm sqrt(9 + 16 + 144) = 13
        // max 6.5: factor 6.5 / (13 + 1e-6) = 0.49999996..., grads ~ [1.5, 2] and [[6]]
        Tensor a = Tensor.of(new float[] {3, 4}, 2);
        Tensor b = Tensor.of(new float[] {12}, 1, 1);
        double norm = GradientClipping.clipGlobalNorm(List.of(a, b), 6.5);
        assertEquals(13.0, norm);
        double f = 6.5 / (13 + 1e-6);
        RlAssert.close("a", new double[] {3 * f, 4 * f}, a.toFloatArray(), 0, 1e-7);
        RlAssert.close("b", new double[] {12 * f}, b.toFloatArray(), 0, 1e-7);
        RlAssert.close("clipped norm", 6.5, GradientClipping.globalNorm(List.of(a, b)), 0, 1e-6);
    }

    @Test
    void belowTheThresholdNothingChanges() {
        float[] v = {0.3f, -0.4f};
        Tensor a = Tensor.of(v, 2);
        RlAssert.close("norm", 0.5, GradientClipping.clipGlobalNorm(List.of(a), 1.0), 0, 1e-7);
        RlAssert.bitwise("unchanged", v, a.toFloatArray());
        assertEquals(1.0, GradientClipping.coefficient(100, 0));
    }
}
