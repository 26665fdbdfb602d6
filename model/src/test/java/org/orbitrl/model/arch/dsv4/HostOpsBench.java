package org.orbitrl.model.arch.dsv4;

import java.util.Arrays;
import java.util.SplittableRandom;

/**
 * DeepSeek V4's host-side operations between the backend's (its values live on the host's tape): one layer's two
 * hyper-connection mixes at DeepSeek-V4-Flash's widths (4 streams of 4096, 20 Sinkhorn iterations: the streams' RMSNorm,
 * the mixing product [T, 24] = norm(streams) · fnᵀ over 16384 channels, the Sinkhorn map, the collapse into the block's
 * input and the expansion of its output back into 4 streams) and the block input's RMSNorm, forward and backward
 * through the tape of one sequence of T tokens, with its rows spread over the common pool's threads (the default)
 * against one thread, in the same run (each measured twice, the second time reported). The two must agree bit for bit (each row's arithmetic is the same on any thread).
 *
 * <pre>java ... org.orbitrl.model.arch.dsv4.HostOpsBench [tokens,...]</pre>
 */
public final class HostOpsBench {
    private static final int HC = 4;
    private static final int HIDDEN = 4096;
    private static final int ITERS = 20;

    private HostOpsBench() {
    }

    public static void main(String[] args) {
        int[] tokens = args.length > 0 ? Arrays.stream(args[0].split(",")).mapToInt(Integer::parseInt).toArray()
                : new int[]{512, 2048};
        SplittableRandom r = new SplittableRandom(5);
        int mixes = (2 + HC) * HC;
        DeepseekV4HyperConnection attnHc = hyper(r, mixes);
        DeepseekV4HyperConnection ffnHc = hyper(r, mixes);
        float[] norm = random(r, HIDDEN, 0.1f, 1f);
        System.out.printf("DeepSeek V4 host operations of one layer: two hyper-connection mixes (%d streams of %d, %d Sinkhorn "
                + "iterations) and the block input's RMSNorm, forward + backward; %d threads in the common pool%n", HC, HIDDEN,
                ITERS, java.util.concurrent.ForkJoinPool.commonPool().getParallelism() + 1);
        System.out.println("| tokens | one thread, ms | rows over the threads, ms | ratio | bit for bit |");
        System.out.println("|---|---|---|---|---|");
        for (int t : tokens) {
            float[] streams = random(r, t * HC * HIDDEN, -1f, 1f);
            float[] dOut = random(r, t * HC * HIDDEN, -1f, 1f);
            float[][] one = new float[1][];
            float[][] many = new float[1][];
            double serial = 0;
            double spread = 0;
            for (int round = 0; round < 2; round++) {   // the first round warms both forms up; the second is reported
                Ops.parallel = false;
                serial = time(attnHc, ffnHc, norm, streams, dOut, t, 3, one);
                Ops.parallel = true;
                spread = time(attnHc, ffnHc, norm, streams, dOut, t, 3, many);
            }
            System.out.printf("| %d | %.1f | %.1f | %.1fx | %s |%n", t, serial, spread, serial / spread,
                    Arrays.equals(one[0], many[0]) ? "yes" : "**no**");
        }
    }

    /** Median ms after one warm-up; the streams' gradient of the first call into grad[0]. */
    private static double time(DeepseekV4HyperConnection a, DeepseekV4HyperConnection f, float[] norm, float[] streams,
                               float[] dOut, int t, int reps, float[][] grad) {
        double[] ms = new double[reps];
        for (int rep = -1; rep < reps; rep++) {
            long t0 = System.nanoTime();
            GradTape tape = new GradTape();
            Node s = new Node(streams);
            Node s2 = mix(tape, a, norm, s);
            Node out = mix(tape, f, norm, s2);
            System.arraycopy(dOut, 0, out.grad(), 0, dOut.length);
            tape.backward();
            if (rep >= 0) {
                ms[rep] = (System.nanoTime() - t0) / 1e6;
            } else {
                grad[0] = s.grad().clone();
            }
        }
        Arrays.sort(ms);
        return ms[reps / 2];
    }

    /** streams -> collapse -> RMSNorm (the block, here the identity) -> expand: a layer side's host work. */
    private static Node mix(GradTape tape, DeepseekV4HyperConnection h, float[] norm, Node streams) {
        Node w = h.weights(tape, streams);
        Node in = h.collapse(tape, w, streams);
        Node normed = Ops.rmsNorm(tape, null, in, HIDDEN, norm, 1e-6f);
        return h.expand(tape, w, normed, streams);
    }

    private static DeepseekV4HyperConnection hyper(SplittableRandom r, int mixes) {
        return new DeepseekV4HyperConnection(random(r, mixes * HC * HIDDEN, -0.01f, 0.01f), random(r, mixes, -0.5f, 0.5f),
                new float[]{0.5f, 0.5f, 0.5f}, HC, HIDDEN, ITERS, 1e-6f, 1e-6f);
    }

    private static float[] random(SplittableRandom r, int n, float lo, float hi) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (lo + (hi - lo) * r.nextDouble());
        }
        return v;
    }
}
