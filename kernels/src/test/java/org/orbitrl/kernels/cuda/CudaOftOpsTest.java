package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.OftOps;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The device OFT ops against the host's {@link OftOps} on the same seeded parameters, for block
 * sizes from 2 to 80 (the work matrices in shared memory up to b = 34, in the device workspace
 * beyond: b = 48, 64 and 80 take that path for the series and the backward, b = 80 for the exact
 * forward too), stored counts 1 (block_share), 3 and 40, the exact Cayley map and the
 * Cayley-Neumann series of 2, 5 and 7 terms. Both compute in double and round to f32: rotations
 * within 1e-6 + 1e-6·|ref|, gradients (accumulated onto a random buffer) within 1e-6 + 1e-5·|ref|,
 * the coft projection within 2.5e-7·|ref| (the norm's sum is taken in another order) with rows
 * inside the ball left bit for bit; the rotation of activations (x·R and x·Rᵀ, one shared block
 * or one per slice) within 1e-6 + 1e-6·|ref|.
 */
class CudaOftOpsTest extends CudaTestBase {

    @ParameterizedTest
    @CsvSource({"2,3,0", "2,1,5", "8,40,0", "8,40,5", "16,3,2", "16,1,7", "32,40,0", "32,40,5", "33,3,7",
            "48,3,0", "48,3,5", "64,1,0", "64,3,5", "80,3,0", "80,1,5"})
    void rotationAndBackwardMatchTheHost(int b, int stored, int terms) {
        SplittableRandom r = rng(31L * b + 7L * stored + terms);
        int n = b * (b - 1) / 2;
        Tensor param = randn(r, (float) (0.4 / Math.sqrt(b)), stored, n);
        Tensor dR = randn(r, 1f, stored, b, b);
        Tensor grad0 = randn(r, 0.5f, stored, n);
        String what = "b=" + b + " stored=" + stored + " terms=" + terms;

        Tensor hostRot = Tensor.allocate(Arena.ofAuto(), DType.F32, stored, b, b);
        OftOps.rotation(param, terms, hostRot);
        Tensor devParam = dev(param);
        Tensor devRot = poisoned(DType.F32, stored, b, b);
        gpu.oftRotation(devParam, terms, devRot);
        assertClose(what + " rotationᵀ", hostRot.toFloatArray(), gpu.toHost(devRot).toFloatArray(), 1e-6, 1e-6);

        Tensor hostGrad = Tensor.of(grad0.toFloatArray(), stored, n);
        OftOps.rotationBackward(param, dR, terms, hostGrad);
        Tensor devGrad = dev(grad0);
        gpu.oftRotationBackward(devParam, dev(dR), terms, devGrad);
        assertClose(what + " gradient", hostGrad.toFloatArray(), gpu.toHost(devGrad).toFloatArray(), 1e-6, 1e-5);
    }

    @ParameterizedTest
    @CsvSource({"2,5,1,false", "8,16,16,false", "8,16,16,true", "32,7,80,false", "32,7,80,true", "32,64,1,true",
            "64,3,40,false", "80,2,3,true"})
    void rotationOfActivationsMatchesTheHost(int b, int rows, int stored, boolean transposed) {
        SplittableRandom r = rng(17L * b + rows + stored);
        int blocks = stored == 1 ? 5 : stored;
        Tensor x = randn(r, 1f, rows, blocks * b);
        Tensor rt = randn(r, 0.3f, stored, b, b);
        Tensor want = Tensor.allocate(Arena.ofAuto(), DType.F32, rows, blocks * b);
        OftOps.rotate(x, rt, transposed, want);
        Tensor got = poisoned(DType.F32, rows, blocks * b);
        gpu.oftRotate(dev(x), dev(rt), transposed, got);
        // one strided-batched cuBLAS f32 product: the b-term sums may run in another order than the host's,
        // so within 1e-5 + 1e-5·|ref| (b ≤ 80 terms of |x| ≈ 1, |R| ≈ 0.3: f32 rounding stays below 1e-5)
        assertClose("b=" + b + " rows=" + rows + " stored=" + stored + (transposed ? " x·Rᵀ" : " x·R"),
                want.toFloatArray(), gpu.toHost(got).toFloatArray(), 1e-5, 1e-5);
    }

    @Test
    void coftProjectionMatchesTheHost() {
        SplittableRandom r = rng(5);
        int stored = 37;
        int n = 496;   // b = 32
        float[] v = randn(r, 0.02f, stored, n).toFloatArray();
        for (int j = 0; j < stored; j += 3) {
            for (int k = 0; k < n; k++) {
                v[j * n + k] *= 1e-3f;   // every third row inside the ball
            }
        }
        double radius = 0.2 / Math.sqrt(stored);
        Tensor host = Tensor.of(v.clone(), stored, n);
        OftOps.project(host, radius);
        Tensor d = dev(Tensor.of(v.clone(), stored, n));
        gpu.oftProject(d, radius);
        float[] want = host.toFloatArray();
        float[] got = gpu.toHost(d).toFloatArray();
        assertClose("coft projection", want, got, 0, 2.5e-7);
        int projected = 0;
        for (int j = 0; j < stored; j++) {
            boolean moved = false;
            for (int k = 0; k < n; k++) {
                moved |= want[j * n + k] != v[j * n + k];
                if (j % 3 == 0) {
                    assertEquals(v[j * n + k], got[j * n + k], "row " + j + " is inside the ball: untouched");
                }
            }
            projected += moved ? 1 : 0;
        }
        assertEquals(stored - (stored + 2) / 3, projected, "rows the host projected");
    }
}
