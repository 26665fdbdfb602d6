package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The fused dequantize-GEMV ({@code qgemv.cu}) in dense mode against the scalar backend's
 * {@code matmulQuantized}: every format, f32 and bf16 x, row counts 1..20 (each compile-time chunk,
 * ragged chunks and more rows than one chunk), K from 3 groups (fewer than a warp's k lanes) to 97 (a
 * ragged last step of the unrolled loop), and N not a multiple of the rows a block computes; the dense bf16-weight GEMV behind {@code matmul} up to 16 rows; and
 * {@code matmulAccumulate} (y += x·wᵀ) on both of its paths. Tolerance |err| ≤ 1e-6 + 1e-5·Σ|x·w| (f32 accumulation of
 * exact weight values; the bf16 case multiplies the bf16-rounded x on the reference side too).
 */
class CudaQgemvTest extends CudaTestBase {
    private static final String[] FORMATS = {"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"};

    @Test
    void denseMatchesScalarBackend() {
        SplittableRandom r = rng(71);
        int[][] shapes = {{70, 768}, {96, 2048}, {40, 96}, {8, 512}, {33, 3104}}; // N, K: 24, 64, 3, 16 and 97 groups a row
        int[] rows = {1, 3, 4, 8, 13, 16, 20};
        for (String format : FORMATS) {
            for (int[] s : shapes) {
                int n = s[0];
                int k = s[1];
                QuantizedTensor w = CudaQuantTest.random(format, r, n, k);
                QuantizedTensor dw = gpu.toDevice(w);
                float[] wf = CudaQuantTest.dequantizeRef(w);
                try {
                    for (int m : rows) {
                        for (boolean bf16 : new boolean[]{false, true}) {
                            check(format, w, dw, wf, r, m, n, k, bf16);
                        }
                    }
                } finally {
                    gpu.free(dw);
                }
            }
        }
    }

    @Test
    void denseBf16WeightsMatchScalarBackend() {
        SplittableRandom r = rng(72);
        int[][] shapes = {{70, 2048}, {33, 200}, {256, 64}}; // N, K (K/8 = 256, 25, 8 loads a row)
        for (int[] s : shapes) {
            int n = s[0];
            int k = s[1];
            float[] wf = bf16Round(randn(r, 0.1f, n, k).toFloatArray());
            Tensor w = Tensor.of(wf, n, k).to(DType.BF16);
            Tensor dw = dev(w);
            for (int m : new int[]{1, 2, 5, 8, 11, 16}) {
                float[] xv = randn(r, 1f, m, k).toFloatArray();
                Tensor x = Tensor.of(xv, m, k);
                Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, m, n);
                cpu.matmul(x, w, ref);
                Tensor y = poisoned(DType.F32, m, n);
                gpu.matmul(dev(x), dw, y);
                double[] a = absDot(xv, wf, m, n, k);
                double[] tol = new double[a.length];
                for (int i = 0; i < a.length; i++) {
                    tol[i] = 1e-6 + 1e-5 * a[i];
                }
                assertWithin("matmul bf16 w M=" + m + " N=" + n + " K=" + k, ref.toFloatArray(), gpu.toHost(y).toFloatArray(), tol);
            }
        }
    }

    /**
     * {@code -Dorbit.cuda.gemvPrologue=on}: the one-row bf16 product whose weight loads precede its wait ({@code
     * bgemv_pre1}) gives {@code bgemv_m1}'s bits, plain and accumulating, over K from 1 to 512 loads a row (one to eight
     * steps of a lane) and N not a multiple of a block's 8 rows, and stays within the scalar backend's tolerance
     * (1e-6 + 1e-5·Σ|x·w|). Then as a programmatic dependent: two products chained (the second's x is the first's y) with
     * dependent launches on give the same bits as without, so its wait holds back the read of x. The launch is the
     * prologue kernel's: left out by {@code -Dorbit.cuda.omitKernels=bgemv_pre1}, y keeps its poison. The norm-folded
     * q/k/v forms give their plain kernels' bits, with a bf16 and an f32 norm weight: {@code bgemv_norm_scale_pre1} those
     * of {@code bgemv_norm_scale_m1} (the scaled fold, the default), {@code bgemv_norm_pre1} those of {@code
     * bgemv_norm_lr_m1} (the staged fold), and without a prologue {@code bgemv_norm_scale_w1} (five blocks an SM, {@code
     * -Dorbit.cuda.qkvWave}) those of {@code bgemv_norm_scale_m1}; each the launch (left out, the outputs keep their poison).
     */
    @Test
    void prologueGemvGivesTheBitsOfTheOneRowGemv() {
        SplittableRandom r = rng(74);
        int[][] shapes = {{2048, 4096}, {5120, 2048}, {70, 2048}, {33, 200}, {9, 8}}; // N, K
        for (int[] s : shapes) {
            int n = s[0];
            int k = s[1];
            float[] wf = bf16Round(randn(r, 0.05f, n, k).toFloatArray());
            Tensor w = Tensor.of(wf, n, k).to(DType.BF16);
            Tensor dw = dev(w);
            float[] xv = randn(r, 1f, 1, k).toFloatArray();
            Tensor x = dev(Tensor.of(xv, 1, k));
            float[] y0 = randn(r, 2f, 1, n).toFloatArray();
            String what = "N=" + n + " K=" + k;
            Tensor plain = poisoned(DType.F32, 1, n);
            withProperty("orbit.cuda.gemvPrologue", "off", () -> gpu.matmul(x, dw, plain));
            Tensor pre = poisoned(DType.F32, 1, n);
            withProperty("orbit.cuda.gemvPrologue", "on", () -> gpu.matmul(x, dw, pre));
            assertBitsEqual("prologue against bgemv_m1, " + what, gpu.toHost(plain).toFloatArray(), gpu.toHost(pre).toFloatArray());
            Tensor accPlain = dev(Tensor.of(y0, 1, n));
            withProperty("orbit.cuda.gemvPrologue", "off", () -> gpu.matmulAccumulate(x, dw, accPlain));
            Tensor accPre = dev(Tensor.of(y0, 1, n));
            withProperty("orbit.cuda.gemvPrologue", "on", () -> gpu.matmulAccumulate(x, dw, accPre));
            assertBitsEqual("accumulating prologue, " + what, gpu.toHost(accPlain).toFloatArray(), gpu.toHost(accPre).toFloatArray());
            Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, 1, n);
            cpu.matmul(Tensor.of(xv, 1, k), w, ref);
            double[] a = absDot(xv, wf, 1, n, k);
            double[] tol = new double[a.length];
            for (int i = 0; i < a.length; i++) {
                tol[i] = 1e-6 + 1e-5 * a[i];
            }
            assertWithin("prologue against the scalar backend, " + what, ref.toFloatArray(), gpu.toHost(pre).toFloatArray(), tol);
            Tensor omitted = poisoned(DType.F32, 1, n);
            float[] poison = gpu.toHost(omitted).toFloatArray();
            withProperty("orbit.cuda.gemvPrologue", "on", () -> withProperty("orbit.cuda.omitKernels", "bgemv_pre1",
                    () -> gpu.matmul(x, dw, omitted)));
            assertBitsEqual("the prologue kernel is the launch, " + what, poison, gpu.toHost(omitted).toFloatArray());
        }
        // the norm-folded products of q, k and v in both folds (bgemv_norm_scale_pre1 against bgemv_norm_scale_m1, the
        // default; bgemv_norm_pre1 against bgemv_norm_lr_m1, the staged fold), a bf16 and an f32 norm weight
        int[][] qkv = {{4096, 512, 512, 2048}, {70, 33, 9, 200}};   // three N, then K
        // (and bgemv_norm_scale_w1, the default without a prologue, built for five blocks an SM, against m1)
        String[][] folds = {{"scale", "bgemv_norm_scale_pre1", "bgemv_norm_scale_m1", "on"}, {"stage", "bgemv_norm_pre1", "bgemv_norm_lr_m1", "on"},
                {"scale", "bgemv_norm_scale_w1", "bgemv_norm_scale_m1", "off"}};
        for (int[] s : qkv) {
            int k = s[3];
            Tensor x = dev(randn(r, 1f, 1, k));
            for (DType nt : new DType[]{DType.BF16, DType.F32}) {
                Tensor nw = dev(randn(r, 0.5f, k).to(nt));
                Tensor[] ws = new Tensor[3];
                for (int i = 0; i < 3; i++) {
                    ws[i] = dev(randn(r, 0.05f, s[i], k).to(DType.BF16));
                }
                for (String[] fold : folds) {
                    Tensor[] plain = new Tensor[3];
                    Tensor[] pre = new Tensor[3];
                    Tensor[] left = new Tensor[3];
                    for (int i = 0; i < 3; i++) {
                        plain[i] = poisoned(DType.F32, 1, s[i]);
                        pre[i] = poisoned(DType.F32, 1, s[i]);
                        left[i] = poisoned(DType.F32, 1, s[i]);
                    }
                    withProperty("orbit.cuda.normFold", fold[0], () -> {
                        withProperty("orbit.cuda.gemvPrologue", "off", () -> withProperty("orbit.cuda.qkvWave", "off",
                                () -> assertTrue(gpu.rmsNormMatmulShared(x, nw, 1e-6f, ws, plain), "the norm-folded form takes one row")));
                        withProperty("orbit.cuda.gemvPrologue", fold[3], () -> {
                            assertTrue(gpu.rmsNormMatmulShared(x, nw, 1e-6f, ws, pre));
                            withProperty("orbit.cuda.omitKernels", fold[1], () -> gpu.rmsNormMatmulShared(x, nw, 1e-6f, ws, left));
                        });
                    });
                    assertTrue(Float.isNaN(gpu.toHost(left[0]).toFloatArray()[0]), fold[1] + " is the launch");
                    for (int i = 0; i < 3; i++) {
                        assertBitsEqual(fold[1] + " against " + fold[2] + ", weight " + i + " [" + s[i] + ", " + k + "], norm " + nt,
                                gpu.toHost(plain[i]).toFloatArray(), gpu.toHost(pre[i]).toFloatArray());
                    }
                }
            }
        }
        // chained: y1 = x_i · w1ᵀ [1, 2048], y2_i = y1 · w2ᵀ [1, 1536], the second a dependent that reads the first's output;
        // a new x each time (and y1 poisoned before it), so that a second product that read y1 before its wait would read
        // the last x's or the poison and differ
        float[] w1 = bf16Round(randn(r, 0.05f, 2048, 4096).toFloatArray());
        float[] w2 = bf16Round(randn(r, 0.05f, 1536, 2048).toFloatArray());
        Tensor dw1 = dev(Tensor.of(w1, 2048, 4096).to(DType.BF16));
        Tensor dw2 = dev(Tensor.of(w2, 1536, 2048).to(DType.BF16));
        int reps = 20;   // repeated: a wait that did not hold would show in some of them
        Tensor[] xs = new Tensor[reps];
        for (int i = 0; i < reps; i++) {
            xs[i] = dev(randn(r, 1f, 1, 4096));
        }
        float[][][] outs = new float[2][reps][];
        Tensor poison = poisoned(DType.F32, 1, 2048);
        for (int pass = 0; pass < 2; pass++) {
            boolean dependent = pass == 1;
            Tensor y1 = poisoned(DType.F32, 1, 2048);
            Tensor[] y2 = new Tensor[reps];
            for (int i = 0; i < reps; i++) {
                y2[i] = poisoned(DType.F32, 1, 1536);
            }
            gpu.dependentLaunches(dependent);
            try {
                withProperty("orbit.cuda.gemvPrologue", "on", () -> {
                    for (int i = 0; i < reps; i++) {
                        gpu.copy(poison, y1);
                        gpu.matmul(xs[i], dw1, y1);
                        gpu.matmul(y1, dw2, y2[i]);
                    }
                });
            } finally {
                gpu.dependentLaunches(false);
            }
            for (int i = 0; i < reps; i++) {
                outs[pass][i] = gpu.toHost(y2[i]).toFloatArray();
            }
        }
        for (int i = 0; i < reps; i++) {
            assertBitsEqual("chained prologue products " + i + ", dependent launches on against off", outs[0][i], outs[1][i]);
        }
    }

    /**
     * {@code -Dorbit.cuda.gemvStagedX=on} ({@code bgemv_pre1_xs}: {@code bgemv_pre1} with x copied into shared memory after
     * its wait) gives {@code bgemv_pre1}'s bits, plain and accumulating, over K from 8 to 4096 (one to eight steps of a
     * lane) and N not a multiple of a block's rows; the launch is its own (left out, y keeps its poison). Then chained as programmatic dependents, the second product reading the first's output (o's product after the
     * attention's): dependent launches on give the bits of off, 20 times over with a new x each time, and those of the
     * unstaged kernel.
     */
    @Test
    void stagedXGivesTheBitsOfThePrologueGemv() {
        SplittableRandom r = rng(76);
        int[][] shapes = {{2048, 4096}, {5120, 2048}, {70, 2048}, {33, 200}, {9, 8}}; // N, K
        for (int[] s : shapes) {
            int n = s[0];
            int k = s[1];
            Tensor dw = dev(randn(r, 0.05f, n, k).to(DType.BF16));
            Tensor x = dev(randn(r, 1f, 1, k));
            float[] y0 = randn(r, 2f, 1, n).toFloatArray();
            String what = "N=" + n + " K=" + k;
            Tensor plain = poisoned(DType.F32, 1, n);
            Tensor staged = poisoned(DType.F32, 1, n);
            Tensor left = poisoned(DType.F32, 1, n);
            Tensor accPlain = dev(Tensor.of(y0, 1, n));
            Tensor accStaged = dev(Tensor.of(y0, 1, n));
            withProperty("orbit.cuda.gemvPrologue", "plain", () -> {
                gpu.matmul(x, dw, plain);
                gpu.matmulAccumulate(x, dw, accPlain);
                withProperty(CudaQgemv.STAGED_X_PROPERTY, "on", () -> {
                    gpu.matmul(x, dw, staged);
                    gpu.matmulAccumulate(x, dw, accStaged);
                    withProperty("orbit.cuda.omitKernels", "^bgemv_pre1_xs$", () -> gpu.matmul(x, dw, left));
                });
            });
            assertBitsEqual("bgemv_pre1_xs against bgemv_pre1, " + what, gpu.toHost(plain).toFloatArray(), gpu.toHost(staged).toFloatArray());
            assertBitsEqual("accumulating, " + what, gpu.toHost(accPlain).toFloatArray(), gpu.toHost(accStaged).toFloatArray());
            assertTrue(Float.isNaN(gpu.toHost(left).toFloatArray()[0]), "bgemv_pre1_xs is the launch, " + what);
        }
        Tensor dw1 = dev(randn(r, 0.05f, 2048, 4096).to(DType.BF16));
        Tensor dw2 = dev(randn(r, 0.05f, 1536, 2048).to(DType.BF16));
        int reps = 20;
        Tensor[] xs = new Tensor[reps];
        for (int i = 0; i < reps; i++) {
            xs[i] = dev(randn(r, 1f, 1, 4096));
        }
        Tensor poison = poisoned(DType.F32, 1, 2048);
        float[][][] outs = new float[3][reps][];
        for (int pass = 0; pass < 3; pass++) {
            boolean dependent = pass > 0;
            String stagedX = pass == 2 ? "off" : "on";
            Tensor y1 = poisoned(DType.F32, 1, 2048);
            Tensor[] y2 = new Tensor[reps];
            for (int i = 0; i < reps; i++) {
                y2[i] = poisoned(DType.F32, 1, 1536);
            }
            gpu.dependentLaunches(dependent);
            try {
                withProperty("orbit.cuda.gemvPrologue", "plain", () -> withProperty(CudaQgemv.STAGED_X_PROPERTY, stagedX, () -> {
                    for (int i = 0; i < reps; i++) {
                        gpu.copy(poison, y1);
                        gpu.matmul(xs[i], dw1, y1);
                        gpu.matmul(y1, dw2, y2[i]);
                    }
                }));
            } finally {
                gpu.dependentLaunches(false);
            }
            for (int i = 0; i < reps; i++) {
                outs[pass][i] = gpu.toHost(y2[i]).toFloatArray();
            }
        }
        for (int i = 0; i < reps; i++) {
            assertBitsEqual("chained staged products " + i + ", dependent launches on against off", outs[1][i], outs[0][i]);
            assertBitsEqual("chained staged products " + i + " against unstaged", outs[2][i], outs[1][i]);
        }
    }

    @Test
    void accumulatingProductAddsIntoY() {
        SplittableRandom r = rng(73);
        int n = 90;
        int k = 256;
        float[] wf = bf16Round(randn(r, 0.1f, n, k).toFloatArray());
        Tensor w = Tensor.of(wf, n, k).to(DType.BF16);
        Tensor dw = dev(w);
        for (int m : new int[]{1, 7, 16, 40}) {
            float[] xv = randn(r, 1f, m, k).toFloatArray();
            float[] y0 = randn(r, 3f, m, n).toFloatArray();
            Tensor prod = Tensor.allocate(Arena.ofAuto(), DType.F32, m, n);
            cpu.matmul(Tensor.of(xv, m, k), w, prod);
            float[] ref = prod.toFloatArray();
            for (int i = 0; i < ref.length; i++) {
                ref[i] += y0[i];
            }
            Tensor y = dev(Tensor.of(y0, m, n));
            gpu.matmulAccumulate(dev(Tensor.of(xv, m, k)), dw, y);
            double[] a = absDot(xv, wf, m, n, k);
            double rel = m <= CudaMatmulOps.QGEMV_MAX_ROWS ? 1e-5 : 1.0 / 256; // beyond 16 rows x is rounded to bf16
            double[] tol = new double[a.length];
            for (int i = 0; i < a.length; i++) {
                tol[i] = 1e-6 + 1e-6 * Math.abs(ref[i]) + rel * a[i];
            }
            assertWithin("matmulAccumulate M=" + m, ref, gpu.toHost(y).toFloatArray(), tol);
        }
    }

    private void check(String format, QuantizedTensor w, QuantizedTensor dw, float[] wf, SplittableRandom r, int m, int n, int k,
                       boolean bf16) {
        float[] xv = randn(r, 1f, m, k).toFloatArray();
        if (bf16) {
            xv = bf16Round(xv);
        }
        Tensor x = Tensor.of(xv, m, k);
        Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, m, n);
        cpu.matmulQuantized(x, w, ref);
        Tensor dx = dev(bf16 ? x.to(DType.BF16) : x);
        Tensor y = poisoned(DType.F32, m, n);
        gpu.gemvQuantized(dx, dw, y);
        double[] s = absDot(xv, wf, m, n, k);
        double[] tol = new double[s.length];
        for (int i = 0; i < s.length; i++) {
            tol[i] = 1e-6 + 1e-5 * s[i];
        }
        String what = format + " M=" + m + " N=" + n + " K=" + k + (bf16 ? " bf16 x" : " f32 x");
        assertWithin("gemvQuantized " + what, ref.toFloatArray(), gpu.toHost(y).toFloatArray(), tol);
        if (!bf16 && m <= CudaMatmulOps.QGEMV_MAX_ROWS) { // the Backend entry point takes the same kernel up to 16 rows
            Tensor y2 = poisoned(DType.F32, m, n);
            gpu.matmulQuantized(dx, dw, y2);
            assertWithin("matmulQuantized " + what, ref.toFloatArray(), gpu.toHost(y2).toFloatArray(), tol);
        }
    }
}
