package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.cuda.internal.Launcher;

/**
 * Causal attention on tensor cores (kernels in {@code attention_mma.cu}), FlashAttention-2 structure:
 * the prefill forward (one block per 64 queries of a head, online softmax over 32-key tiles) and the
 * backward in two launches, {@code am_backward_q} (one block per 64 queries of a head: the rows'
 * log-sum-exp and delta = dout·o, then dq) and {@code am_backward_kv} (one block per 64 keys of a kv
 * head and split of the group's query heads: dk and dv over the query tiles that see the keys),
 * plus {@code attnb_sum_splits} adding the splits' partial dk/dv in order when the group is split.
 *
 * <p>Products run as {@code mma.sync m16n8k8} TF32 with f32 accumulation: q, k, v and dout stay f32
 * in memory and are rounded to tf32 (10 mantissa bits, relative error at most 2<sup>-11</sup>) when
 * staged in shared memory; the softmax statistics are f32. TF32 rather than bf16 (8 mantissa bits,
 * 2<sup>-8</sup>) because the results are compared with and used in place of the f32 kernels: TF32
 * keeps the inputs' rounding 8 times smaller at the same memory traffic (inputs are not converted in
 * memory), which leaves the outputs within about 1e-3 of the output scale for unit-scale inputs.
 *
 * <p>Same semantics as the f32 kernels (causal with the query offset, sliding window, sinks, GQA,
 * the callers' strides); taken for head dims D = Dv ∈ {64, 128} with 16-byte aligned rows and
 * strides that are multiples of 4 ({@link #fits}); other shapes keep the f32 kernels. Every sum has
 * an order fixed by the shapes and no atomics are used: results are identical run to run. Exact
 * mode does not use these kernels. {@code -Dorbit.cuda.mmaAttention=off} (read at each call) turns
 * them off.
 */
final class CudaMmaAttention {
    /** The system property: {@code on} (default) or {@code off}. */
    static final String PROPERTY = "orbit.cuda.mmaAttention";
    private static final int BM = 64;       // AM_BM: queries per block (forward, dq)
    private static final int BN = 32;       // AM_BN: keys per streamed tile
    private static final int BK = 64;       // AM_BK: keys per block (dk/dv)
    private static final int BQ = 32;       // AM_BQ: queries per streamed tile (dk/dv)
    private static final int THREADS = 128;
    /** Blocks of the dk/dv launch below which the group's query heads are split across blocks. */
    private static final long KV_BLOCKS = 512;

    private final CudaContext ctx;
    private final Kernel forward64;
    private final Kernel forward128;
    private final Kernel backwardQ64;
    private final Kernel backwardQ128;
    private final Kernel backwardKv64;
    private final Kernel backwardKv128;
    private final Kernel sumSplits;

    CudaMmaAttention(CudaContext ctx) {
        this.ctx = ctx;
        this.forward64 = ctx.kernel("attention_mma", "am_forward_d64");
        this.forward128 = ctx.kernel("attention_mma", "am_forward_d128");
        this.backwardQ64 = ctx.kernel("attention_mma", "am_backward_q_d64");
        this.backwardQ128 = ctx.kernel("attention_mma", "am_backward_q_d128");
        this.backwardKv64 = ctx.kernel("attention_mma", "am_backward_kv_d64");
        this.backwardKv128 = ctx.kernel("attention_mma", "am_backward_kv_d128");
        this.sumSplits = ctx.kernel("attention_backward", "attnb_sum_splits");
    }

    /** Whether the property leaves the tensor-core kernels on. */
    static boolean enabled() {
        String p = System.getProperty(PROPERTY, "on");
        if (!p.equals("on") && !p.equals("off")) {
            throw new IllegalArgumentException("-D" + PROPERTY + "=" + p + ": expected on or off");
        }
        return p.equals("on");
    }

    /**
     * Whether the kernels take these (already validated) inputs: D = Dv ∈ {64, 128}, every input's
     * leading strides multiples of 4 floats and its address 16-byte aligned. Outputs may have any strides.
     */
    static boolean fits(Tensor q, Tensor k, Tensor v, Tensor... more) {
        int d = q.size(2);
        if ((d != 64 && d != 128) || k.size(2) != d || v.size(2) != d) {
            return false;
        }
        for (Tensor t : new Tensor[]{q, k, v}) {
            if (!aligned(t)) {
                return false;
            }
        }
        for (Tensor t : more) {
            if (!aligned(t)) {
                return false;
            }
        }
        return true;
    }

    private static boolean aligned(Tensor t) {
        long[] s = t.strides();
        return s[0] % 4 == 0 && s[1] % 4 == 0 && CudaAllocator.address(t) % 16 == 0;
    }

    /** Causal prefill; arguments validated by the caller, {@link #fits} holds, T and S at least 1. */
    void prefill(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int hkv = k.size(1);
        long[] qs = q.strides();
        long[] ks = k.strides();
        long[] vs = v.strides();
        long[] os = out.strides();
        Kernel kernel = d == 64 ? forward64 : forward128;
        int shared = 4 * (BM * (d + 4) + 2 * BN * (d + 4));
        kernel.allowDynamicShared(shared);
        long tiles = (tq + BM - 1) / BM;
        Launcher.launch(kernel, ctx.stream.handle(), tiles * hq, 1, THREADS, shared, q, qs[0], qs[1], k, ks[0], ks[1], v,
                vs[0], vs[1], out, os[0], os[1], tq, hq, hkv, queryStart, spec.slidingWindow(), spec.scale(), spec.sinks());
    }

    /**
     * The number of blocks that share a kv head's query heads (a divisor of the group): the smallest
     * that gives the dk/dv launch {@link #KV_BLOCKS} blocks, else the whole group. A function of the
     * shapes alone, so the summation order is too.
     */
    static int splits(int s, int hq, int hkv) {
        int group = hq / hkv;
        long keyTiles = (s + BK - 1) / BK;
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

    /** Attention backward; arguments validated by {@link CudaAttentionBackward}, {@link #fits} holds (dout too). */
    void backward(Tensor q, Tensor k, Tensor v, Tensor dout, int queryStart, AttentionSpec spec, Tensor dq, Tensor dk,
                  Tensor dv) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = k.size(0);
        int hkv = k.size(1);
        int splits = splits(s, hq, hkv);
        long items = (long) tq * hq;
        long part = splits > 1 ? (long) splits * s * hkv * d : 0;
        // [2, T, Hq] lse and delta, then the splits' partial dk and dv, each [splits, S, Hkv, D]
        Tensor scratch = ctx.scratch(CudaContext.Scratch.ATTENTION_BACKWARD, DType.F32, 2 * items + 2 * part);
        Tensor lse = scratch.slice(0, 0, items);
        Tensor delta = scratch.slice(0, items, 2 * items);
        long[] qs = q.strides();
        long[] ks = k.strides();
        long[] vs = v.strides();
        long[] os = dout.strides();
        long[] dqs = dq.strides();
        int window = spec.slidingWindow();
        float scale = spec.scale();

        Kernel kq = d == 64 ? backwardQ64 : backwardQ128;
        int sharedQ = 4 * (BM + BN) * 2 * (d + 4);
        kq.allowDynamicShared(sharedQ);
        long qTiles = (tq + BM - 1) / BM;
        Launcher.launch(kq, ctx.stream.handle(), qTiles * hq, 1, THREADS, sharedQ, q, qs[0], qs[1], k, ks[0], ks[1], v,
                vs[0], vs[1], dout, os[0], os[1], dq, dqs[0], dqs[1], lse, delta, tq, hq, hkv, queryStart, window, scale,
                spec.sinks());

        Tensor kOut = dk;
        Tensor vOut = dv;
        long kS = dk.strides()[0];
        long kH = dk.strides()[1];
        long vS = dv.strides()[0];
        long vH = dv.strides()[1];
        long kP = 0;
        long vP = 0;
        if (splits > 1) {
            kOut = scratch.slice(0, 2 * items, 2 * items + part);
            vOut = scratch.slice(0, 2 * items + part, 2 * items + 2 * part);
            kS = (long) hkv * d;
            kH = d;
            kP = (long) s * hkv * d;
            vS = kS;
            vH = kH;
            vP = kP;
        }
        Kernel kkv = d == 64 ? backwardKv64 : backwardKv128;
        int sharedKv = 4 * ((BK + BQ) * 2 * (d + 4) + 2 * BQ);
        kkv.allowDynamicShared(sharedKv);
        long kTiles = (s + BK - 1) / BK;
        Launcher.launch(kkv, ctx.stream.handle(), kTiles * hkv * splits, 1, THREADS, sharedKv, q, qs[0], qs[1], k, ks[0],
                ks[1], v, vs[0], vs[1], dout, os[0], os[1], kOut, kS, kH, kP, vOut, vS, vH, vP, lse, delta, tq, s, hq, hkv,
                queryStart, window, scale, splits);
        if (splits > 1) {
            ctx.launch(sumSplits, ctx.gridFor((long) s * hkv * d, 256), 256, kOut, splits, s, hkv, d, dk,
                    dk.strides()[0], dk.strides()[1]);
            ctx.launch(sumSplits, ctx.gridFor((long) s * hkv * d, 256), 256, vOut, splits, s, hkv, d, dv,
                    dv.strides()[0], dv.strides()[1]);
        }
    }
}
