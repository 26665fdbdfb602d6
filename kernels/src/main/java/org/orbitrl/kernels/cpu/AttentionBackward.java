package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.orbitrl.kernels.cpu.VectorMath.F;
import static org.orbitrl.kernels.cpu.VectorMath.L;
import static org.orbitrl.kernels.cpu.VectorMath.LE;

/**
 * Causal attention backward for one sequence, recomputing the probabilities from q and k. One
 * task per key/value head: it owns dk and dv of that head, which sum over every query of the
 * group, and the dq of the group's query heads. Queries run in ascending order and, within a
 * query, the group's heads in ascending order, so every sum has one order whatever the thread
 * count. Sinks are frozen and get no gradient.
 */
final class AttentionBackward {
    private AttentionBackward() {
    }

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    /** q, k, v, dout may be strided (last dimension contiguous); dq [T, Hq, D], dk [S, Hkv, D], dv [S, Hkv, Dv] contiguous. */
    static void run(WorkerPool pool, Tensor q, Tensor k, Tensor v, Tensor dout, int queryStart, AttentionSpec spec,
                    Tensor dq, Tensor dk, Tensor dv) {
        int t = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = k.size(0);
        int hkv = k.size(1);
        int dvd = v.size(2);
        int group = hq / hkv;
        long[] qst = q.strides();
        long[] kst = k.strides();
        long[] vst = v.strides();
        long[] ost = dout.strides();
        float[] sinks = spec.sinks() == null ? null : spec.sinks().toFloatArray();
        float scale = spec.scale();
        int window = spec.slidingWindow();
        pool.parallelFor(hkv, kvh -> {
            // dk, dv of this head start at zero; every row of them is written below or stays zero
            for (int j = 0; j < s; j++) {
                dk.segment().asSlice(dk.byteOffset() + ((long) j * hkv + kvh) * d * 4, (long) d * 4).fill((byte) 0);
                dv.segment().asSlice(dv.byteOffset() + ((long) j * hkv + kvh) * dvd * 4, (long) dvd * 4).fill((byte) 0);
            }
            float[] p = new float[s];
            float[] dp = new float[s];
            float[] acc = new float[d];
            for (int i = 0; i < t; i++) {
                int pos = queryStart + i;
                int lo = window > 0 ? Math.max(0, pos - window + 1) : 0;
                int n = pos - lo + 1;
                for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                    long qo = (q.offset() + i * qst[0] + h * qst[1]) * 4;
                    long oo = (dout.offset() + i * ost[0] + h * ost[1]) * 4;
                    long ko = (k.offset() + lo * kst[0] + kvh * kst[1]) * 4;
                    long vo = (v.offset() + lo * vst[0] + kvh * vst[1]) * 4;
                    long dko = dk.byteOffset() + ((long) lo * hkv + kvh) * d * 4;
                    long dvo = dv.byteOffset() + ((long) lo * hkv + kvh) * dvd * 4;
                    long dqo = dq.byteOffset() + ((long) i * hq + h) * d * 4;
                    head(q.segment(), qo, k.segment(), ko, kst[0] * 4, v.segment(), vo, vst[0] * 4, dout.segment(), oo,
                            dq.segment(), dqo, dk.segment(), dko, (long) hkv * d * 4, dv.segment(), dvo, (long) hkv * dvd * 4,
                            n, d, dvd, scale, sinks == null ? Float.NaN : sinks[h], p, dp, acc);
                }
            }
        });
    }

    /** One query head against its n visible keys (rows strided by kRow, vRow, dkRow, dvRow bytes). */
    private static void head(MemorySegment qs, long q, MemorySegment ks, long k, long kRow, MemorySegment vs, long v, long vRow,
                             MemorySegment os, long o, MemorySegment dqs, long dq, MemorySegment dks, long dk, long dkRow,
                             MemorySegment dvs, long dv, long dvRow, int n, int d, int dvd, float scale, float sink,
                             float[] p, float[] dp, float[] acc) {
        // probabilities, as the forward pass computes them
        float max = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < n; j++) {
            p[j] = DotKernels.f32x1x1(qs, q, ks, k + j * kRow, d) * scale;
            max = Math.max(max, p[j]);
        }
        boolean hasSink = !Float.isNaN(sink);
        if (hasSink) {
            max = Math.max(max, sink);
        }
        float sum = 0;
        for (int j = 0; j < n; j++) {
            p[j] = VectorMath.exp(p[j] - max);
            sum += p[j];
        }
        if (hasSink) {
            sum += VectorMath.exp(sink - max);
        }
        // dv_j += p_j·dout; dp_j = dout·v_j; Σ p_j·dp_j
        float pdp = 0;
        for (int j = 0; j < n; j++) {
            p[j] /= sum;
            dp[j] = DotKernels.f32x1x1(os, o, vs, v + j * vRow, dvd);
            axpy(p[j], os, o, dvs, dv + j * dvRow, dvd);
            pdp = Math.fma(p[j], dp[j], pdp);
        }
        // ds_j = p_j·(dp_j − Σ)·scale; dq += ds_j·k_j; dk_j += ds_j·q
        java.util.Arrays.fill(acc, 0, d, 0f);
        int dv8 = d - d % L;
        for (int j = 0; j < n; j++) {
            float ds = p[j] * (dp[j] - pdp) * scale;
            long kj = k + j * kRow;
            FloatVector dsv = FloatVector.broadcast(F, ds);
            for (int c = 0; c < dv8; c += L) {
                FloatVector.fromMemorySegment(F, ks, kj + c * 4L, LE).fma(dsv, FloatVector.fromArray(F, acc, c)).intoArray(acc, c);
            }
            for (int c = dv8; c < d; c++) {
                acc[c] = Math.fma(ks.get(F32, kj + c * 4L), ds, acc[c]);
            }
            axpy(ds, qs, q, dks, dk + j * dkRow, d);
        }
        MemorySegment.copy(acc, 0, dqs, F32, dq, d);
    }

    /** y[0..n) += a·x[0..n), one FMA per element. */
    private static void axpy(float a, MemorySegment xs, long x, MemorySegment ys, long y, int n) {
        int nv = n - n % L;
        FloatVector av = FloatVector.broadcast(F, a);
        for (int c = 0; c < nv; c += L) {
            FloatVector.fromMemorySegment(F, xs, x + c * 4L, LE).fma(av, FloatVector.fromMemorySegment(F, ys, y + c * 4L, LE))
                    .intoMemorySegment(ys, y + c * 4L, LE);
        }
        for (int c = nv; c < n; c++) {
            ys.set(F32, y + c * 4L, Math.fma(xs.get(F32, x + c * 4L), a, ys.get(F32, y + c * 4L)));
        }
    }
}
