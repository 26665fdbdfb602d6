package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.VectorMath.F;
import static org.orbitrl.kernels.cpu.VectorMath.L;
import static org.orbitrl.kernels.cpu.VectorMath.LE;
import static org.orbitrl.kernels.cpu.VectorMath.hsum;

/**
 * Causal attention, one task per (query, head), two passes over the visible keys: scores and
 * their maximum, then exponentials, their canonical sum (plus the sink's term) and the weighted
 * sum of values (sequential over keys, lane-wise over value channels). The visible key range of
 * a query depends only on its absolute position and the window, so a query's output is the same
 * whether it is computed in a prefill of many queries or alone at decode.
 */
final class AttentionKernel {
    private AttentionKernel() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    private static final ThreadLocal<float[][]> SCRATCH = ThreadLocal.withInitial(() -> new float[2][0]);

    static void run(WorkerPool pool, Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec) {
        int t = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int hkv = k.size(1);
        int dv = v.size(2);
        int group = hq / hkv;
        long[] qst = q.strides();
        long[] kst = k.strides();
        long[] vst = v.strides();
        long[] ost = out.strides();
        float[] sinks = spec.sinks() == null ? null : spec.sinks().toFloatArray();
        float scale = spec.scale();
        int window = spec.slidingWindow();
        MemorySegment qs = q.segment();
        MemorySegment ks = k.segment();
        MemorySegment vs = v.segment();
        MemorySegment os = out.segment();
        pool.parallelFor(t * hq, task -> {
            int i = task / hq;
            int h = task % hq;
            int kvh = h / group;
            int pos = queryStart + i;
            int lo = window > 0 ? Math.max(0, pos - window + 1) : 0;
            int n = pos - lo + 1;
            float[][] scratch = SCRATCH.get();
            if (scratch[0].length < n) {
                scratch[0] = new float[Math.max(n, scratch[0].length * 2)];
            }
            if (scratch[1].length < dv) {
                scratch[1] = new float[dv];
            }
            long qo = (q.offset() + i * qst[0] + h * qst[1]) * 4;
            long ko = (k.offset() + lo * kst[0] + kvh * kst[1]) * 4;
            long vo = (v.offset() + lo * vst[0] + kvh * vst[1]) * 4;
            long oo = (out.offset() + i * ost[0] + h * ost[1]) * 4;
            head(qs, qo, ks, ko, kst[0] * 4, vs, vo, vst[0] * 4, os, oo, n, d, dv, scale,
                    sinks == null ? Float.NaN : sinks[h], scratch[0], scratch[1]);
        });
    }

    /**
     * One query head against n keys. {@code sink} NaN means no sink. p [≥ n] and acc [≥ dv] are scratch.
     */
    static void head(MemorySegment qs, long q, MemorySegment ks, long k, long kRow, MemorySegment vs, long v, long vRow,
                     MemorySegment os, long o, int n, int d, int dv, float scale, float sink, float[] p, float[] acc) {
        float max = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < n; j++) {
            float s = DotKernels.f32x1x1(qs, q, ks, k + j * kRow, d) * scale;
            p[j] = s;
            max = Math.max(max, s);
        }
        boolean hasSink = !Float.isNaN(sink);
        if (hasSink) {
            max = Math.max(max, sink);
        }
        int nv = n - n % L;
        FloatVector sumV = FloatVector.zero(F);
        for (int j = 0; j < nv; j += L) {
            FloatVector e = VectorMath.exp(FloatVector.fromArray(F, p, j).sub(max));
            e.intoArray(p, j);
            sumV = sumV.add(e);
        }
        float sum = hsum(sumV);
        for (int j = nv; j < n; j++) {
            float e = VectorMath.exp(p[j] - max);
            p[j] = e;
            sum += e;
        }
        if (hasSink) {
            sum += VectorMath.exp(sink - max);
        }

        int cv = dv - dv % L;
        java.util.Arrays.fill(acc, 0, dv, 0f);
        for (int j = 0; j < n; j++) {
            long row = v + j * vRow;
            float pj = p[j];
            FloatVector pv = FloatVector.broadcast(F, pj);
            for (int c = 0; c < cv; c += L) {
                FloatVector.fromMemorySegment(F, vs, row + c * 4L, LE)
                        .fma(pv, FloatVector.fromArray(F, acc, c))
                        .intoArray(acc, c);
            }
            for (int c = cv; c < dv; c++) {
                acc[c] = Math.fma(vs.get(F32, row + c * 4L), pj, acc[c]);
            }
        }
        for (int c = 0; c < cv; c += L) {
            FloatVector.fromArray(F, acc, c).div(sum).intoMemorySegment(os, o + c * 4L, LE);
        }
        for (int c = cv; c < dv; c++) {
            os.set(F32, o + c * 4L, acc[c] / sum);
        }
    }
}
