package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * DeepSeek V4's block-diagonal output projection wo_a at DeepSeek-V4-Flash's widths (8 groups of 4096 channels, rank
 * 1024: 33.5M multiply-adds a token each way), forward and backward through the tape of one sequence: on the CUDA
 * backend's default kernels ({@code DeepseekV4Attention.grouped}: o copied there group-major, one product a group, the
 * result copied back; bf16 weights) against the host loop it replaced (each token, group and output in turn on one
 * thread) in the same run, and the device's rate (4·T·33.5M FLOPs over the call, copies included).
 *
 * <pre>java ... org.orbitrl.model.arch.dsv4.OutputProjectionBench [hostTokens,...] [deviceTokens,...]</pre>
 */
public final class OutputProjectionBench {
    private static final int GROUPS = 8;
    private static final int IN = 4096;
    private static final int RANK = 1024;

    private OutputProjectionBench() {
    }

    public static void main(String[] args) {
        int[] hostTokens = args.length > 0 ? parse(args[0]) : new int[]{64};
        int[] deviceTokens = args.length > 1 ? parse(args[1]) : new int[]{64, 512, 2048, 4096};
        if (!Cuda.available()) {
            System.out.println("OutputProjectionBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        SplittableRandom r = new SplittableRandom(9);
        float[] oA = new float[GROUPS * RANK * IN];
        for (int i = 0; i < oA.length; i++) {   // bf16 values, as a checkpoint's
            oA[i] = Float.intBitsToFloat(Float.floatToRawIntBits((float) (r.nextDouble() * 0.04 - 0.02)) & 0xFFFF0000);
        }
        System.out.printf("DeepSeek V4 wo_a: %d groups of %d channels, rank %d; forward + backward of one sequence%n", GROUPS, IN,
                RANK);
        System.out.println("| tokens | host loop, ms | device, ms (copies included) | host / device | device TFLOP/s |");
        System.out.println("|---|---|---|---|---|");
        DeepseekV4Attention.PlacedMatrix pm = new DeepseekV4Attention.PlacedMatrix();
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), false)) {
            for (int t : deviceTokens) {
                float[] o = random(r, t * GROUPS * IN);
                float[] dy = random(r, t * GROUPS * RANK);
                double host = Arrays.stream(hostTokens).anyMatch(h -> h == t) ? hostLoop(oA, o, dy, t) : Double.NaN;
                double[] ms = new double[5];
                for (int rep = -1; rep < ms.length; rep++) {
                    long t0 = System.nanoTime();
                    GradTape tape = new GradTape();
                    Node on = new Node(o);
                    Node y = DeepseekV4Attention.grouped(tape, gpu, pm, oA, on, t, GROUPS, IN, RANK);
                    System.arraycopy(dy, 0, y.grad(), 0, dy.length);
                    tape.backward();
                    if (rep >= 0) {
                        ms[rep] = (System.nanoTime() - t0) / 1e6;
                    }
                }
                Arrays.sort(ms);
                double dev = ms[ms.length / 2];
                double flops = 4.0 * t * GROUPS * RANK * (double) IN;
                System.out.printf("| %d | %s | %.2f | %s | %.1f |%n", t, Double.isNaN(host) ? "" : String.format("%.1f", host), dev,
                        Double.isNaN(host) ? "" : String.format("%.0fx", host / dev), flops / (dev * 1e-3) / 1e12);
            }
        }
    }

    /** ms of the loop the host ran before: forward then backward, each token, group and output in turn. */
    private static double hostLoop(float[] oA, float[] o, float[] dy, int n) {
        long t0 = System.nanoTime();
        float[] y = new float[n * GROUPS * RANK];
        for (int row = 0; row < n; row++) {
            for (int gi = 0; gi < GROUPS; gi++) {
                for (int j = 0; j < RANK; j++) {
                    float s = 0;
                    int wo = (gi * RANK + j) * IN;
                    int xo = row * GROUPS * IN + gi * IN;
                    for (int i = 0; i < IN; i++) {
                        s += o[xo + i] * oA[wo + i];
                    }
                    y[(row * GROUPS + gi) * RANK + j] = s;
                }
            }
        }
        float[] dx = new float[o.length];
        for (int row = 0; row < n; row++) {
            for (int gi = 0; gi < GROUPS; gi++) {
                for (int j = 0; j < RANK; j++) {
                    float dv = dy[(row * GROUPS + gi) * RANK + j];
                    int wo = (gi * RANK + j) * IN;
                    int xo = row * GROUPS * IN + gi * IN;
                    for (int i = 0; i < IN; i++) {
                        dx[xo + i] += dv * oA[wo + i];
                    }
                }
            }
        }
        if (Float.isNaN(y[0] + dx[0])) {
            throw new IllegalStateException("NaN");
        }
        return (System.nanoTime() - t0) / 1e6;
    }

    private static float[] random(SplittableRandom r, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return v;
    }

    private static int[] parse(String list) {
        return Arrays.stream(list.split(",")).mapToInt(Integer::parseInt).toArray();
    }
}
