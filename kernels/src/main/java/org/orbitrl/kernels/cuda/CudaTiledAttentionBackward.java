package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.cuda.internal.Launcher;

/**
 * Tiled (FlashAttention-2 style) causal attention backward for head dims up to 128, f32 on CUDA
 * cores (kernels in {@code attention_backward.cu}). Tiles of 32 queries by 32 keys staged in
 * shared memory; nothing quadratic is stored. Launches:
 * <ol>
 *   <li>{@code attnb_q}, one block per (32 queries, head): the rows' log-sum-exp and
 *       delta = dout·o (o recomputed with an online softmax, or both from the forward's output and
 *       log-sum-exp where it kept them), then dq;</li>
 *   <li>{@code attnb_kv}, one block per (32 keys, kv head, split of the group's query heads):
 *       dk and dv summed over the query tiles that see the keys;</li>
 *   <li>when the group is split ({@link #splits}), {@code attnb_sum_splits} adds the splits'
 *       partial dk and dv in order.</li>
 * </ol>
 * Every sum has an order fixed by the shapes alone and no atomics are used: results are
 * identical run to run.
 */
final class CudaTiledAttentionBackward {
    /** Largest head dimension (q/k and v) the tiled kernels take. */
    static final int MAX_HEAD_DIM = 128;
    private static final int TILE = 32;      // AB_T
    private static final int THREADS = 128;  // AB_THREADS
    private static final int XT = TILE + 4;  // AB_XT
    /** Blocks of the dk/dv launch below which the group's query heads are split across blocks. */
    private static final long KV_BLOCKS = 1024;

    private final CudaContext ctx;
    private final Kernel backwardQ;
    private final Kernel backwardKv;
    private final Kernel sumSplits;

    CudaTiledAttentionBackward(CudaContext ctx) {
        this.ctx = ctx;
        this.backwardQ = ctx.kernel("attention_backward", "attnb_q");
        this.backwardKv = ctx.kernel("attention_backward", "attnb_kv");
        this.sumSplits = ctx.kernel("attention_backward", "attnb_sum_splits");
    }

    /** Whether the tiled kernels take these head dims. */
    static boolean fits(int d, int dv) {
        return d >= 1 && dv >= 1 && d <= MAX_HEAD_DIM && dv <= MAX_HEAD_DIM;
    }

    /** Shared-memory row stride for a head dim: a multiple of 4 floats holding an odd number of float4. */
    static int ld(int w) {
        int w4 = (w + 3) & ~3;
        return ((w4 >> 2) & 1) == 1 ? w4 : w4 + 4;
    }

    /**
     * The number of blocks that share a kv head's query heads (a divisor of the group): the
     * smallest one that gives the dk/dv launch {@link #KV_BLOCKS} blocks, else the whole group.
     * A function of the shapes alone, so the summation order is too.
     */
    static int splits(int s, int hq, int hkv) {
        int group = hq / hkv;
        long keyTiles = (s + TILE - 1) / TILE;
        int splits = 1;
        for (int p = 1; p <= group; p++) {
            if (group % p == 0) {
                splits = p;
                if (keyTiles * hkv * p >= KV_BLOCKS) {
                    break;
                }
            }
        }
        return splits;
    }

    /** Whether every row of the inputs can be read as float4: widths and strides multiples of 4, 16-byte aligned. */
    static boolean vectorLoads(Tensor... inputs) {
        for (Tensor t : inputs) {
            long[] st = t.strides();
            if (t.size(2) % 4 != 0 || st[0] % 4 != 0 || st[1] % 4 != 0 || CudaAllocator.address(t) % 16 != 0) {
                return false;
            }
        }
        return true;
    }

    /**
     * Arguments validated by {@link CudaAttentionBackward#attentionBackward}; T and S at least 1. out and lse: the
     * forward's output and log-sum-exp (exact mode's tiled forward keeps them), read instead of running the softmax
     * again in {@code attnb_q}; or both null.
     */
    void run(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dout, int queryStart, AttentionSpec spec,
             Tensor dq, Tensor dk, Tensor dv) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = k.size(0);
        int hkv = k.size(1);
        int dvd = v.size(2);
        int splits = splits(s, hq, hkv);
        long items = (long) tq * hq;
        long partK = splits > 1 ? (long) splits * s * hkv * d : 0;
        long partV = splits > 1 ? (long) splits * s * hkv * dvd : 0;
        // [2, T, Hq] lse and delta, then the splits' partial dk [splits, S, Hkv, D] and dv [splits, S, Hkv, Dv]
        Tensor scratch = ctx.scratch(CudaContext.Scratch.ATTENTION_BACKWARD, DType.F32, 2 * items + partK + partV);
        Tensor rowLse = scratch.slice(0, 0, items);
        Tensor delta = scratch.slice(0, items, 2 * items);
        long[] qs = q.strides();
        long[] ks = k.strides();
        long[] vs = v.strides();
        long[] os = dout.strides();
        long[] dqs = dq.strides();
        int window = spec.slidingWindow();
        float scale = spec.scale();

        int vec = vectorLoads(q, k, v, dout) ? 1 : 0;
        int rowFloats = 2 * TILE * (ld(d) + ld(dvd));
        int sharedQ = 4 * (rowFloats + TILE * XT);
        backwardQ.allowDynamicShared(sharedQ);
        long qTiles = (tq + TILE - 1) / TILE;
        Launcher.launch(backwardQ, ctx.stream.handle(), qTiles * hq, 1, THREADS, sharedQ, q, qs[0], qs[1], k, ks[0], ks[1],
                v, vs[0], vs[1], dout, os[0], os[1], dq, dqs[0], dqs[1], rowLse, delta, tq, hq, hkv, d, dvd, queryStart,
                window, scale, spec.sinks(), vec, out, out == null ? 0L : out.strides()[0], out == null ? 0L : out.strides()[1], lse);

        Tensor kOut = dk;
        Tensor vOut = dv;
        long kS = dk.strides()[0];
        long kH = dk.strides()[1];
        long vS = dv.strides()[0];
        long vH = dv.strides()[1];
        long kP = 0;
        long vP = 0;
        if (splits > 1) {
            kOut = scratch.slice(0, 2 * items, 2 * items + partK);
            vOut = scratch.slice(0, 2 * items + partK, 2 * items + partK + partV);
            kS = (long) hkv * d;
            kH = d;
            kP = (long) s * hkv * d;
            vS = (long) hkv * dvd;
            vH = dvd;
            vP = (long) s * hkv * dvd;
        }
        int sharedKv = 4 * (rowFloats + 2 * TILE * XT);
        backwardKv.allowDynamicShared(sharedKv);
        long kTiles = (s + TILE - 1) / TILE;
        Launcher.launch(backwardKv, ctx.stream.handle(), kTiles * hkv * splits, 1, THREADS, sharedKv, q, qs[0], qs[1],
                k, ks[0], ks[1], v, vs[0], vs[1], dout, os[0], os[1], kOut, kS, kH, kP, vOut, vS, vH, vP, rowLse, delta,
                tq, s, hq, hkv, d, dvd, queryStart, window, scale, splits, vec);
        if (splits > 1) {
            ctx.launch(sumSplits, ctx.gridFor((long) s * hkv * d, 256), 256, kOut, splits, s, hkv, d, dk,
                    dk.strides()[0], dk.strides()[1]);
            ctx.launch(sumSplits, ctx.gridFor((long) s * hkv * dvd, 256), 256, vOut, splits, s, hkv, dvd, dv,
                    dv.strides()[0], dv.strides()[1]);
        }
    }
}
