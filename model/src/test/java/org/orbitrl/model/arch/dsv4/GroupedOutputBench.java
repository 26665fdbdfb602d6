package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.nn.Placement;
import org.orbitrl.model.nn.Weight;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * DeepSeek V4's grouped output projection wo_a ({@link GroupedOutput}) at DeepSeek-V4-Flash's widths (8 head groups of
 * 4096 channels, rank 1024, the weight bf16 in device memory), forward and backward through the tape of one sequence,
 * the copies of its input and output between host and device included, on the CUDA backend with the default kernels;
 * against the host loop it replaces (per token, per output, an f32 sum over the group's channels, the tokens over the
 * common pool's threads) at the smallest token count, in the same run, and the f32 rate of the products against the
 * f32 rate cuBLAS reaches on one group's product of the same shape, in the same run.
 *
 * <pre>java ... org.orbitrl.model.arch.dsv4.GroupedOutputBench [tokens,...] [host tokens]</pre>
 */
public final class GroupedOutputBench {
    private static final int GROUPS = 8;
    private static final int IN = 4096;
    private static final int R = 1024;

    private GroupedOutputBench() {
    }

    public static void main(String[] args) {
        int[] tokens = args.length > 0 ? Arrays.stream(args[0].split(",")).mapToInt(Integer::parseInt).toArray()
                : new int[]{64, 512, 2048, 4096};
        int hostTokens = args.length > 1 ? Integer.parseInt(args[1]) : 64;
        SplittableRandom r = new SplittableRandom(11);
        float[] w = random(r, GROUPS * R * IN, 0.02f);
        Tensor wb = Tensor.of(w, (long) GROUPS * R, IN).to(DType.BF16);
        float[] wExact = wb.toFloatArray();
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), false)) {
            GroupedOutput p = new GroupedOutput(Placement.weight(gpu.allocator(), Weight.of(wb)), GROUPS, IN, R);
            double peak = cublasRate(gpu, 4096);
            System.out.printf("DeepSeek V4 wo_a: %d groups of %d channels, rank %d, bf16 weight; forward + backward of one "
                    + "sequence, copies included; cuBLAS f32 on one group's [4096, %d] x [%d, %d]^T alone: %.1f TFLOP/s%n",
                    GROUPS, IN, R, IN, R, IN, peak);
            System.out.println("| tokens | device, ms | TFLOP/s | of cuBLAS's rate | host loop, ms | device / host | max |y - host| "
                    + "/ max |y| |");
            System.out.println("|---|---|---|---|---|---|---|");
            for (int t : tokens) {
                float[] o = random(r, t * GROUPS * IN, 1f);
                float[] dy = random(r, t * GROUPS * R, 1f);
                float[][][] dev = new float[1][][];
                double ms = time(() -> dev[0] = run(p, gpu, o, dy, t), 3);
                double tflops = 2.0 * 2 * t * GROUPS * (double) R * IN / (ms * 1e-3) / 1e12;
                String host = "";
                String ratio = "";
                String err = "";
                if (t <= hostTokens) {
                    float[][][] hp = new float[1][][];
                    double hms = time(() -> hp[0] = hostLoop(wExact, o, dy, t), 1);
                    float[][] h = {joined(hp[0])};
                    host = String.format("%.1f", hms);
                    ratio = String.format("%.0fx", hms / ms);
                    double worst = 0;
                    double scale = 0;
                    float[] d = joined(dev[0]);
                    for (int i = 0; i < h[0].length; i++) {
                        worst = Math.max(worst, Math.abs(h[0][i] - d[i]));
                        scale = Math.max(scale, Math.abs(h[0][i]));
                    }
                    err = String.format("%.2e", worst / scale);
                }
                System.out.printf("| %d | %.2f | %.1f | %.2f | %s | %s | %s |%n", t, ms, tflops, tflops / peak, host, ratio, err);
            }
        }
    }

    /** The forward's output and the input's gradient (outside the timing, the caller joins them to compare). */
    private static float[][] run(GroupedOutput p, CudaBackend b, float[] o, float[] dy, int t) {
        GradTape tape = new GradTape();
        Node on = new Node(o);
        Node y = p.forward(tape, b, on, t);
        System.arraycopy(dy, 0, y.grad(), 0, dy.length);
        tape.backward();
        return new float[][] {y.v(), on.grad()};
    }

    private static float[] joined(float[][] parts) {
        float[] out = Arrays.copyOf(parts[0], parts[0].length + parts[1].length);
        System.arraycopy(parts[1], 0, out, parts[0].length, parts[1].length);
        return out;
    }

    /** The projection as the host ran it before: per token, group and output an f32 sum; the backward likewise. */
    private static float[][] hostLoop(float[] w, float[] o, float[] dy, int n) {
        float[] y = new float[n * GROUPS * R];
        float[] dx = new float[o.length];
        Ops.forRows(n, (long) GROUPS * R * IN, row -> {
            for (int gi = 0; gi < GROUPS; gi++) {
                for (int j = 0; j < R; j++) {
                    float s = 0;
                    int wo = (gi * R + j) * IN;
                    int xo = row * GROUPS * IN + gi * IN;
                    for (int i = 0; i < IN; i++) {
                        s += o[xo + i] * w[wo + i];
                    }
                    y[(row * GROUPS + gi) * R + j] = s;
                }
            }
            for (int gi = 0; gi < GROUPS; gi++) {
                for (int j = 0; j < R; j++) {
                    float dv = dy[(row * GROUPS + gi) * R + j];
                    int wo = (gi * R + j) * IN;
                    int xo = row * GROUPS * IN + gi * IN;
                    for (int i = 0; i < IN; i++) {
                        dx[xo + i] += dv * w[wo + i];
                    }
                }
            }
        });
        return new float[][] {y, dx};
    }

    /** TFLOP/s of cuBLAS's f32 product [m, IN] x [R, IN]^T on device operands, median of 5 after a warm-up. */
    private static double cublasRate(CudaBackend b, int m) {
        SplittableRandom r = new SplittableRandom(12);
        Tensor x = b.toDevice(Tensor.of(random(r, m * IN, 1f), m, IN));
        Tensor w = b.toDevice(Tensor.of(random(r, R * IN, 0.02f), R, IN));
        Tensor y = b.toDevice(Tensor.of(new float[m * R], m, R));
        double ms = time(() -> {
            b.matmul(x, w, y);
            b.synchronize();
        }, 5);
        b.free(x);
        b.free(w);
        b.free(y);
        return 2.0 * m * R * IN / (ms * 1e-3) / 1e12;
    }

    private static double time(Runnable body, int reps) {
        double[] ms = new double[reps];
        for (int rep = -1; rep < reps; rep++) {
            long t0 = System.nanoTime();
            body.run();
            if (rep >= 0) {
                ms[rep] = (System.nanoTime() - t0) / 1e6;
            }
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    private static float[] random(SplittableRandom r, int n, float scale) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) ((r.nextDouble() * 2 - 1) * scale);
        }
        return v;
    }
}
