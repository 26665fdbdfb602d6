package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

/**
 * add, mul, scale, silu, swiglu against the scalar backend. add/mul/scale are one IEEE operation
 * per element: bitwise equal (tolerance 0). silu/swiglu use expf on the device (≤ 2 ulp) against
 * Math.exp: |err| ≤ 1e-7 + 2e-6·|ref|.
 */
class CudaElementwiseTest extends CudaTestBase {
    private static final long[][] SHAPES = {{1}, {7}, {3, 33}, {257, 129}, {5, 3, 67}, {1_000_003}};

    @Test
    void addMulScaleAreExact() {
        SplittableRandom r = rng(11);
        for (long[] shape : SHAPES) {
            Tensor a = randn(r, 3f, shape);
            Tensor b = randn(r, 3f, shape);
            Tensor da = dev(a);
            Tensor db = dev(b);
            for (String op : new String[]{"add", "mul", "scale"}) {
                Tensor ref = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, shape);
                Tensor out = poisoned(DType.F32, shape);
                switch (op) {
                    case "add" -> {
                        cpu.add(a, b, ref);
                        gpu.add(da, db, out);
                    }
                    case "mul" -> {
                        cpu.mul(a, b, ref);
                        gpu.mul(da, db, out);
                    }
                    default -> {
                        cpu.scale(a, -0.37f, ref);
                        gpu.scale(da, -0.37f, out);
                    }
                }
                assertClose(op + " " + java.util.Arrays.toString(shape), ref.toFloatArray(), gpu.toHost(out).toFloatArray(), 0, 0);
            }
        }
    }

    @Test
    void siluAndSwiglu() {
        SplittableRandom r = rng(12);
        for (long[] shape : SHAPES) {
            Tensor g = randn(r, 8f, shape);
            Tensor u = randn(r, 2f, shape);
            Tensor dg = dev(g);
            Tensor du = dev(u);
            Tensor ref = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, shape);
            Tensor out = poisoned(DType.F32, shape);
            cpu.silu(g, ref);
            gpu.silu(dg, out);
            assertClose("silu " + java.util.Arrays.toString(shape), ref.toFloatArray(), gpu.toHost(out).toFloatArray(), 1e-7, 2e-6);
            cpu.swiglu(g, u, ref);
            gpu.swiglu(dg, du, out);
            assertClose("swiglu " + java.util.Arrays.toString(shape), ref.toFloatArray(), gpu.toHost(out).toFloatArray(), 1e-7, 2e-6);
        }
    }

    @Test
    void inPlace() {
        SplittableRandom r = rng(13);
        Tensor a = randn(r, 1f, 33, 65);
        Tensor b = randn(r, 1f, 33, 65);
        Tensor ref = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, 33, 65);
        cpu.swiglu(a, b, ref);
        cpu.add(ref, b, ref);
        Tensor da = dev(a);
        Tensor db = dev(b);
        gpu.swiglu(da, db, da);
        gpu.add(da, db, da);
        assertClose("swiglu then add, in place", ref.toFloatArray(), gpu.toHost(da).toFloatArray(), 1e-7, 2e-6);
    }
}
