package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link CudaFusedDecode#moeDecode}, the routed MLP of a decode step as one cooperative launch, against a
 * reference computed here in double from the inputs (the quantized weights through the format classes'
 * own decoders), and against its three-launch form.
 *
 * <p>The selection is checked as in {@link CudaFusedDecodeTest} (each chosen expert has the reference's
 * j-th largest probability, the values those probabilities). The output is then checked against
 * {@code x + Σ_j v_j · Σ_i act_j[i] · D[e_j][o, i]} in double with the kernel's own (e, v), act from the
 * double norm: within {@code ulp(x) + 1e-6 + Σ_j v_j (2e-5 Σ_i |act_j[i] D| + Σ_i tolAct_j[i] |D|)}, where
 * tolAct is the SwiGLU bound of CudaFusedDecodeTest ({@code 1e-6 + 1.1·tolG·|u| + |silu(g)|·tolU}, tolG
 * and tolU {@code 1e-6 + 1e-5·Σ|h·w|}).
 */
class CudaMoeDecodeTest extends CudaTestBase {
    private static final float EPS = 1e-6f;

    /**
     * {hidden, intermediate, experts, topk}: Qwen3-30B-A3B's hidden and expert widths (32 of its 128 experts,
     * to keep the host reference short); ragged tiles and chunks; 128 experts; one expert; a small router.
     */
    private static final int[][] SHAPES = {{2048, 768, 32, 8}, {512, 96, 40, 8}, {256, 64, 128, 8}, {256, 64, 16, 4}, {96, 32, 8, 1}};

    @Test
    void oneLaunchMatchesTheDoubleReference() {
        SplittableRandom r = rng(401);
        for (String format : new String[]{"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"}) {
            for (int[] c : SHAPES) {
                if (c[0] == 2048 && !format.equals("int4-g32")) {
                    continue; // the widest shape in the benchmarks' format only
                }
                Layer l = new Layer(r, format, c);
                try {
                    for (boolean normalize : new boolean[]{true, false}) {
                        onePersistent(true, () -> check(r, l, c, normalize, 1));
                    }
                } finally {
                    l.free();
                }
            }
        }
    }

    @Test
    void threeLaunchesAndSeveralTokensMatchTheReferenceToo() {
        SplittableRandom r = rng(402);
        check(r, "int4-g32", SHAPES[0], true, false, 1);
        check(r, "mxfp4", SHAPES[1], true, true, 3);   // three tokens: the three launches
        check(r, "int4-g32", new int[]{256, 64, 16, 10}, true, true, 1); // topk 10: more experts than warps, three launches
    }

    @Test
    void oneLaunchAndThreeLaunchesAgreeAndAGraphReplaysIt() {
        SplittableRandom r = rng(403);
        int[] c = SHAPES[0];
        Layer l = new Layer(r, "int4-g32", c);
        try {
            float[] x = randn(r, 2f, 1, c[0]).toFloatArray();
            float[][] out = new float[2][];
            long[][] ids = new long[2][];
            for (int way = 0; way < 2; way++) {
                Tensor dx = dev(Tensor.of(x, 1, c[0]));
                Tensor values = poisoned(DType.F32, 1, c[3]);
                Tensor indices = poisoned(DType.I32, 1, c[3]);
                boolean before = gpu.fusedDecode().persistentMoe();
                gpu.fusedDecode().persistentMoe(way == 0);
                try {
                    l.run(dx, values, indices, true);
                } finally {
                    gpu.fusedDecode().persistentMoe(before);
                }
                out[way] = gpu.toHost(dx).toFloatArray();
                ids[way] = gpu.toHost(indices).toLongArray();
            }
            assertArrayEquals(ids[1], ids[0], "the experts of one launch and of three");
            double[] tol = l.tolerance(x, ids[0], 1);
            for (int i = 0; i < tol.length; i++) {
                tol[i] *= 2;
            }
            assertWithin("one launch vs three launches", out[1], out[0], tol);

            // captured once, replayed: each replay adds the MLP again (the barrier re-armed between launches)
            onePersistent(true, () -> {
                Tensor dx = dev(Tensor.of(x, 1, c[0]));
                Tensor values = poisoned(DType.F32, 1, c[3]);
                Tensor indices = poisoned(DType.I32, 1, c[3]);
                Tensor directX = dev(Tensor.of(x, 1, c[0]));
                for (int step = 0; step < 3; step++) {
                    l.run(directX, values, indices, true);
                }
                float[] direct = gpu.toHost(directX).toFloatArray();
                try (CudaGraph g = CudaGraph.capture(gpu.stream(), () -> l.run(dx, values, indices, true))) {
                    gpu.copyToDevice(Tensor.of(x, 1, c[0]), dx);
                    for (int step = 0; step < 3; step++) {
                        g.launch(gpu.stream());
                    }
                    assertArrayEquals(direct, gpu.toHost(dx).toFloatArray(), 0f, "three graph replays vs three direct launches");
                }
            });
        } finally {
            l.free();
        }
    }

    @Test
    void logitsThatAreNotNumbersAreReportedAndTheNextLaunchIsRight() {
        SplittableRandom r = rng(404);
        int[] c = SHAPES[3];
        Layer l = new Layer(r, "int4-g32", c);
        boolean before = gpu.fusedDecode().persistentMoe();
        gpu.fusedDecode().persistentMoe(true);
        try {
            float[] bad = randn(r, 1f, 1, c[0]).toFloatArray();
            bad[5] = Float.NaN;
            l.run(dev(Tensor.of(bad, 1, c[0])), poisoned(DType.F32, 1, c[3]), poisoned(DType.I32, 1, c[3]), true);
            IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
            assertTrue(e.getMessage().contains("expert id"), e.getMessage());
            check(r, l, c, true, 1);
            IllegalArgumentException shape = assertThrows(IllegalArgumentException.class, () -> gpu.fusedDecode().moeDecode(
                    dev(randn(r, 1f, 1, c[0] + 32)), l.norm, EPS, l.router, c[3], true, l.gate, l.up, l.down, c[2],
                    poisoned(DType.F32, 1, c[3]), poisoned(DType.I32, 1, c[3])));
            assertTrue(shape.getMessage().contains("moeDecode"), shape.getMessage());
            IllegalArgumentException tooMany = assertThrows(IllegalArgumentException.class, () -> gpu.fusedDecode().moeDecode(
                    dev(randn(r, 1f, 1, c[0])), l.norm, EPS, l.router, c[2] + 1, true, l.gate, l.up, l.down, c[2],
                    poisoned(DType.F32, 1, c[2] + 1), poisoned(DType.I32, 1, c[2] + 1)));
            assertTrue(tooMany.getMessage().contains("top " + (c[2] + 1)), tooMany.getMessage());
        } finally {
            gpu.fusedDecode().persistentMoe(before);
            l.free();
        }
    }

    private void check(SplittableRandom r, String format, int[] c, boolean normalize, boolean persistent, int tokens) {
        Layer l = new Layer(r, format, c);
        try {
            onePersistent(persistent, () -> check(r, l, c, normalize, tokens));
        } finally {
            l.free();
        }
    }

    /** {@code body} with the one-launch way on or off, then the switch as it was. */
    private void onePersistent(boolean on, Runnable body) {
        boolean before = gpu.fusedDecode().persistentMoe();
        gpu.fusedDecode().persistentMoe(on);
        try {
            body.run();
        } finally {
            gpu.fusedDecode().persistentMoe(before);
        }
    }

    private void check(SplittableRandom r, Layer l, int[] c, boolean normalize, int tokens) {
        int h = c[0];
        int topk = c[3];
        String what = "moeDecode " + l.format + " H " + h + " I " + c[1] + " E " + c[2] + " top " + topk + " tokens " + tokens
                + (normalize ? " normalized" : "") + (gpu.fusedDecode().persistentMoe() ? "" : " (three launches)");
        float[] x = randn(r, 2f, tokens, h).toFloatArray();
        Tensor dx = dev(Tensor.of(x, tokens, h));
        Tensor values = poisoned(DType.F32, tokens, topk);
        Tensor indices = poisoned(DType.I32, tokens, topk);
        l.run(dx, values, indices, normalize);
        float[] v = gpu.toHost(values).toFloatArray();
        long[] ids = gpu.toHost(indices).toLongArray();
        CudaDecodeRouterTest.checkSelection(what, CudaFusedDecodeTest.normalize(x, l.nw, tokens, h), l.rw, c[2], h, topk, normalize, v, ids);
        assertWithin(what, l.reference(x, ids, v, tokens), gpu.toHost(dx).toFloatArray(), l.tolerance(x, ids, tokens, v));
    }

    /** A layer's MLP weights on the host (as the kernels see them) and on the device. */
    private final class Layer {
        final String format;
        final int h;
        final int inter;
        final int experts;
        final int topk;
        final float[] nw;
        final float[] rw;
        final float[] gw;
        final float[] uw;
        final float[] dw;
        final Tensor norm;
        final Tensor router;
        final QuantizedTensor gate;
        final QuantizedTensor up;
        final QuantizedTensor down;

        Layer(SplittableRandom r, String format, int[] c) {
            this.format = format;
            this.h = c[0];
            this.inter = c[1];
            this.experts = c[2];
            this.topk = c[3];
            nw = CudaFusedDecodeTest.normWeights(r, h, true);
            rw = bf16Round(randn(r, 0.05f, experts, h).toFloatArray());
            QuantizedTensor g = CudaQuantTest.random(format, r, experts * inter, h);
            QuantizedTensor u = CudaQuantTest.random(format, r, experts * inter, h);
            QuantizedTensor d = CudaQuantTest.random(format, r, experts * h, inter);
            gw = CudaQuantTest.dequantizeRef(g);
            uw = CudaQuantTest.dequantizeRef(u);
            dw = CudaQuantTest.dequantizeRef(d);
            norm = dev(Tensor.of(nw, h).to(DType.BF16));
            router = dev(Tensor.of(rw, experts, h).to(DType.BF16));
            gate = gpu.toDevice(g);
            up = gpu.toDevice(u);
            down = gpu.toDevice(d);
        }

        void run(Tensor x, Tensor values, Tensor indices, boolean normalize) {
            gpu.fusedDecode().moeDecode(x, norm, EPS, router, topk, normalize, gate, up, down, experts, values, indices);
        }

        /** act [tokens·topk][inter] in double for the given experts, and its SwiGLU bound. */
        private double[][][] act(float[] x, long[] ids, int tokens) {
            double[][] xn = CudaFusedDecodeTest.normalize(x, nw, tokens, h);
            double[][] a = new double[tokens * topk][inter];
            double[][] tol = new double[tokens * topk][inter];
            float[] row = new float[h];
            for (int t = 0; t < tokens; t++) {
                for (int q = 0; q < h; q++) {
                    row[q] = (float) xn[t][q];
                }
                for (int j = 0; j < topk; j++) {
                    int e = (int) ids[t * topk + j];
                    for (int o = 0; o < inter; o++) {
                        double[] g = CudaFusedDecodeTest.dot(row, 0, gw, (e * inter + o) * h, h);
                        double[] u = CudaFusedDecodeTest.dot(row, 0, uw, (e * inter + o) * h, h);
                        double silu = g[0] / (1 + Math.exp(-g[0]));
                        a[t * topk + j][o] = silu * u[0];
                        double tolG = 1e-6 + 1e-5 * g[1];
                        double tolU = 1e-6 + 1e-5 * u[1];
                        tol[t * topk + j][o] = 1e-6 + 1.1 * tolG * Math.abs(u[0]) + Math.abs(silu) * tolU;
                    }
                }
            }
            return new double[][][]{a, tol};
        }

        float[] reference(float[] x, long[] ids, float[] v, int tokens) {
            double[][] a = act(x, ids, tokens)[0];
            float[] out = new float[tokens * h];
            for (int t = 0; t < tokens; t++) {
                for (int o = 0; o < h; o++) {
                    double s = x[t * h + o];
                    for (int j = 0; j < topk; j++) {
                        int e = (int) ids[t * topk + j];
                        double d = 0;
                        for (int i = 0; i < inter; i++) {
                            d += a[t * topk + j][i] * dw[(e * h + o) * inter + i];
                        }
                        s += v[t * topk + j] * d;
                    }
                    out[t * h + o] = (float) s;
                }
            }
            return out;
        }

        /** The bound with every expert's weight taken as 1 (normalized weights are at most 1). */
        double[] tolerance(float[] x, long[] ids, int tokens) {
            float[] v = new float[tokens * topk];
            Arrays.fill(v, 1f);
            return tolerance(x, ids, tokens, v);
        }

        double[] tolerance(float[] x, long[] ids, int tokens, float[] v) {
            double[][][] at = act(x, ids, tokens);
            double[] tol = new double[tokens * h];
            for (int t = 0; t < tokens; t++) {
                for (int o = 0; o < h; o++) {
                    double s = 0;
                    double ref = x[t * h + o];
                    for (int j = 0; j < topk; j++) {
                        int p = t * topk + j;
                        int e = (int) ids[p];
                        double sa = 0;
                        double st = 0;
                        for (int i = 0; i < inter; i++) {
                            double w = Math.abs(dw[(e * h + o) * inter + i]);
                            sa += Math.abs(at[0][p][i]) * w;
                            st += at[1][p][i] * w;
                        }
                        s += Math.abs(v[p]) * (2e-5 * sa + st);
                        ref += Math.abs(v[p]) * sa;
                    }
                    tol[t * h + o] = 1e-6 + s + 2 * Math.ulp((float) ref);
                }
            }
            return tol;
        }

        void free() {
            gpu.free(gate);
            gpu.free(up);
            gpu.free(down);
        }
    }
}
