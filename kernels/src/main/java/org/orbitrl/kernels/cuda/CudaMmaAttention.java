package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.cuda.internal.Launcher;

/**
 * Causal attention on tensor cores, FlashAttention-2 structure, in five variants chosen by
 * {@code -Dorbit.cuda.mmaAttention=bf16|bf16v2|bf16v3|bf16v4|tf32|off} (read at each call; default {@value #DEFAULT}):
 * the prefill forward (one block per query tile of a head, online softmax over streamed key tiles)
 * and the backward in two launches, {@code backward_q} (one block per query tile of a head: the rows'
 * log-sum-exp and delta = dout·o, then dq) and {@code backward_kv} (one block per key tile of a kv
 * head and split of the group's query heads: dk and dv over the query tiles that see the keys), plus
 * {@code attnb_sum_splits} adding the splits' partial dk/dv in order when the group is split.
 *
 * <p>{@code bf16} ({@code attention_bf16.cu}): {@code mma.sync m16n8k16} bf16 with f32 accumulation,
 * 128-query (forward, dq) and 128-key (dk/dv) blocks of 8 warps, the next streamed tile loaded while
 * the current one is multiplied. q, k, v and dout stay f32 in memory and are rounded to bf16 (8
 * mantissa bits, relative error at most 2<sup>-9</sup>) when staged, as are the probabilities and
 * score gradients when they enter a product; softmax statistics are f32. The outputs move by a few
 * 1e-3 of their scale for unit-scale inputs, the rounding PyTorch's bf16 attention has too.
 *
 * <p>{@code bf16v2} (the same file, kernels {@code ab2_*}): the bf16 kernels with less work outside
 * the products: the scale folded with log2 e into one fma before {@code ex2}, the causal/window mask
 * applied only on tiles that some key or query crosses, the running output rescaled only when a row
 * maximum grew, and the scale applied to dq and dk once at the end. Same tiles, launches and
 * summation orders; results differ from {@code bf16} by the exponent's last bits.
 *
 * <p>{@code bf16v3}: the {@code bf16v2} forward; the backward first rounds q, dout, k and v to bf16
 * copies (the same rounding the staging does; scratch {@code [2·T·Hq·D + 2·S·Hkv·D]} bf16, see
 * {@link #stagingElements}), and its kernels ({@code ab3_*}) copy their tiles from those by
 * {@code cp.async} instead of through registers, 64 keys a tile in {@code backward_q}: the
 * {@code bf16v2} arithmetic in the same order where the tiles agree (D = 64), the same roundings otherwise.
 *
 * <p>{@code bf16v4} (the default): as {@code bf16v3} with blocks of 4 warps (64 queries or keys),
 * two blocks an SM (neither waits at the other's barriers, so one block's softmax overlaps the other's
 * products), and the forward too: bf16 copies of k and v (scratch {@code [2·S·Hkv·D]} bf16,
 * {@link #forwardStagingElements}), 64 queries a block, 64 keys a tile. The fastest variant forward
 * and backward at training shapes (AttentionMmaBench); the others stay selectable for comparison.
 * Its forward can keep each row's log-sum-exp ({@code Backend.attentionWithStats}); given those and the
 * forward's output, its {@code backward_q} skips the forward's softmax (one product of q·kᵀ and one of p·v a
 * key tile) and takes delta = dout·o from the output: the same numbers bit for bit, by the same tiles.
 *
 * <p>{@code tf32} ({@code attention_mma.cu}): {@code mma.sync m16n8k8} TF32, 64-query / 64-key
 * blocks of 4 warps, tiles staged synchronously; inputs rounded to tf32 (relative error at most
 * 2<sup>-11</sup>), outputs within about 1e-3 of their scale.
 *
 * <p>Same semantics as the f32 kernels (causal with the query offset, sliding window, sinks, GQA,
 * the callers' strides); taken for head dims D = Dv ∈ {64, 128} with 16-byte aligned rows and
 * strides that are multiples of 4 ({@link #fits}); other shapes keep the f32 kernels. Every sum has
 * an order fixed by the shapes and no atomics are used: results are identical run to run. Exact
 * mode does not use these kernels; {@code off} keeps the f32 kernels.
 */
final class CudaMmaAttention {
    /** The system property: {@code bf16}, {@code bf16v2}, {@code bf16v3}, {@code bf16v4}, {@code tf32} or {@code off} ({@code on}: the default variant). */
    static final String PROPERTY = "orbit.cuda.mmaAttention";
    /** Diagnostics: which of the backward's launches run ({@code all}, {@code q} or {@code kv}; see {@link #parts}). */
    static final String PARTS_PROPERTY = "orbit.cuda.mmaAttention.backwardParts";
    /** The variant taken when the property is unset or {@code on}. */
    static final String DEFAULT = "bf16v4";
    private static final int BM = 64;       // AM_BM: queries per block (forward, dq)
    private static final int BN = 32;       // AM_BN: keys per streamed tile
    private static final int BK = 64;       // AM_BK: keys per block (dk/dv)
    private static final int BQ = 32;       // AM_BQ: queries per streamed tile (dk/dv)
    private static final int THREADS = 128;
    private static final int B_BM = 128;    // AB_BM: queries per block (forward, dq), bf16
    private static final int B_BK = 128;    // AB_BK: keys per block (dk/dv), bf16
    private static final int B_THREADS = 256;
    private static final int B3_BN = 64;    // AB3_BN64 = AB3_BN128 (and the ab4 forward's tile): keys a streamed tile of the bf16v3/v4 backward_q
    /** Blocks of the dk/dv launch below which the group's query heads are split across blocks. */
    private static final long KV_BLOCKS = 512;
    /** The same for the bf16 kernels (blocks of twice the keys and threads). */
    private static final long B_KV_BLOCKS = 256;

    private final CudaContext ctx;
    private final Kernel forward64;
    private final Kernel forward128;
    private final Kernel backwardQ64;
    private final Kernel backwardQ128;
    private final Kernel backwardKv64;
    private final Kernel backwardKv128;
    private final Kernel sumSplits;
    private final Kernel bForward64;
    private final Kernel bForward128;
    private final Kernel bBackwardQ64;
    private final Kernel bBackwardQ128;
    private final Kernel bBackwardKv64;
    private final Kernel bBackwardKv128;
    private final Kernel b2Forward64;
    private final Kernel b2Forward128;
    private final Kernel b2BackwardQ64;
    private final Kernel b2BackwardQ128;
    private final Kernel b2BackwardKv64;
    private final Kernel b2BackwardKv128;
    private final Kernel b3BackwardQ64;
    private final Kernel b3BackwardQ128;
    private final Kernel b3BackwardKv64;
    private final Kernel b3BackwardKv128;
    private final Kernel b4Forward64;
    private final Kernel b4Forward128;
    private final Kernel b4BackwardQ64;
    private final Kernel b4BackwardQ128;
    private final Kernel b4BackwardKv64;
    private final Kernel b4BackwardKv128;
    private final Kernel toBf16Pair;

    CudaMmaAttention(CudaContext ctx) {
        this.ctx = ctx;
        this.forward64 = ctx.kernel("attention_mma", "am_forward_d64");
        this.forward128 = ctx.kernel("attention_mma", "am_forward_d128");
        this.backwardQ64 = ctx.kernel("attention_mma", "am_backward_q_d64");
        this.backwardQ128 = ctx.kernel("attention_mma", "am_backward_q_d128");
        this.backwardKv64 = ctx.kernel("attention_mma", "am_backward_kv_d64");
        this.backwardKv128 = ctx.kernel("attention_mma", "am_backward_kv_d128");
        this.sumSplits = ctx.kernel("attention_backward", "attnb_sum_splits");
        this.bForward64 = ctx.kernel("attention_bf16", "ab_forward_d64");
        this.bForward128 = ctx.kernel("attention_bf16", "ab_forward_d128");
        this.bBackwardQ64 = ctx.kernel("attention_bf16", "ab_backward_q_d64");
        this.bBackwardQ128 = ctx.kernel("attention_bf16", "ab_backward_q_d128");
        this.bBackwardKv64 = ctx.kernel("attention_bf16", "ab_backward_kv_d64");
        this.bBackwardKv128 = ctx.kernel("attention_bf16", "ab_backward_kv_d128");
        this.b2Forward64 = ctx.kernel("attention_bf16", "ab2_forward_d64");
        this.b2Forward128 = ctx.kernel("attention_bf16", "ab2_forward_d128");
        this.b2BackwardQ64 = ctx.kernel("attention_bf16", "ab2_backward_q_d64");
        this.b2BackwardQ128 = ctx.kernel("attention_bf16", "ab2_backward_q_d128");
        this.b2BackwardKv64 = ctx.kernel("attention_bf16", "ab2_backward_kv_d64");
        this.b2BackwardKv128 = ctx.kernel("attention_bf16", "ab2_backward_kv_d128");
        this.b3BackwardQ64 = ctx.kernel("attention_bf16", "ab3_backward_q_d64");
        this.b3BackwardQ128 = ctx.kernel("attention_bf16", "ab3_backward_q_d128");
        this.b3BackwardKv64 = ctx.kernel("attention_bf16", "ab3_backward_kv_d64");
        this.b3BackwardKv128 = ctx.kernel("attention_bf16", "ab3_backward_kv_d128");
        this.b4Forward64 = ctx.kernel("attention_bf16", "ab4_forward_d64");
        this.b4Forward128 = ctx.kernel("attention_bf16", "ab4_forward_d128");
        this.b4BackwardQ64 = ctx.kernel("attention_bf16", "ab4_backward_q_d64");
        this.b4BackwardQ128 = ctx.kernel("attention_bf16", "ab4_backward_q_d128");
        this.b4BackwardKv64 = ctx.kernel("attention_bf16", "ab4_backward_kv_d64");
        this.b4BackwardKv128 = ctx.kernel("attention_bf16", "ab4_backward_kv_d128");
        this.toBf16Pair = ctx.kernel("attention_bf16", "ab_to_bf16_pair");
    }

    /** The variant the property selects: {@code bf16}, {@code bf16v2}, {@code bf16v3}, {@code bf16v4}, {@code tf32} or {@code off}. */
    static String variant() {
        String p = System.getProperty(PROPERTY, DEFAULT);
        return switch (p) {
            case "bf16", "bf16v2", "bf16v3", "bf16v4", "tf32", "off" -> p;
            case "on" -> DEFAULT;
            default -> throw new IllegalArgumentException("-D" + PROPERTY + "=" + p
                    + ": expected bf16, bf16v2, bf16v3, bf16v4, tf32, off or on");
        };
    }

    /**
     * bf16 elements of the backward's staging copies (q, dout [T, Hq, D]; k, v [S, Hkv, D]) when the
     * variant stages them ({@code bf16v3}, {@code bf16v4}), else 0.
     */
    static long stagingElements(String variant, int t, int s, int hq, int hkv, int d) {
        return variant.equals("bf16v3") || variant.equals("bf16v4") ? 2L * t * hq * d + 2L * s * hkv * d : 0;
    }

    /** Whether the variant runs the bf16 kernels ({@code bf16} or {@code bf16v2}). */
    private static boolean isBf16(String variant) {
        return variant.startsWith("bf16");
    }

    /**
     * The backward's launches to run, {dq, dk/dv}, from {@link #PARTS_PROPERTY}: {@code all} (default), {@code q}
     * (the staging copies, lse, delta and dq) or {@code kv} (dk and dv, on the lse, delta and copies a previous call
     * left in the scratch): for the benchmark's split of the backward's time; results are complete only with {@code all}.
     */
    private static boolean[] parts() {
        String p = System.getProperty(PARTS_PROPERTY, "all");
        return switch (p) {
            case "all" -> new boolean[]{true, true};
            case "q" -> new boolean[]{true, false};
            case "kv" -> new boolean[]{false, true};
            default -> throw new IllegalArgumentException("-D" + PARTS_PROPERTY + "=" + p + ": expected all, q or kv");
        };
    }

    /** Whether the property leaves the tensor-core kernels on. */
    static boolean enabled() {
        return !variant().equals("off");
    }

    /** Streamed tile of the bf16 kernels (AB_BN64 / AB_BN128 and AB_BQ64 / AB_BQ128 in attention_bf16.cu). */
    private static int bTile(int d) {
        return d == 64 ? 64 : 32;
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

    /**
     * Causal prefill; arguments validated by the caller, {@link #fits} holds, T and S at least 1. {@code lse} (null:
     * none), f32 [T, Hq] contiguous: where the variant keeps them ({@code bf16v4}), each row's softmax statistics for a
     * later {@link #backward} to skip its first pass. Returns whether lse was written.
     */
    boolean prefill(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec, Tensor lse) {
        String variant = variant();
        if (variant.equals("bf16v4")) {
            prefillStaged(q, k, v, out, queryStart, spec, lse);
            return lse != null;
        }
        if (isBf16(variant)) {
            prefillBf16(q, k, v, out, queryStart, spec, !variant.equals("bf16"));
            return false;
        }
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
        return false;
    }

    private void prefillBf16(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec, boolean v2) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int hkv = k.size(1);
        long[] qs = q.strides();
        long[] ks = k.strides();
        long[] vs = v.strides();
        long[] os = out.strides();
        Kernel kernel = v2 ? (d == 64 ? b2Forward64 : b2Forward128) : d == 64 ? bForward64 : bForward128;
        int shared = 2 * (B_BM * (d + 8) + 2 * bTile(d) * (2 * d + 16));
        kernel.allowDynamicShared(shared);
        long tiles = (tq + B_BM - 1) / B_BM;
        Launcher.launch(kernel, ctx.stream.handle(), tiles * hq, 1, B_THREADS, shared, q, qs[0], qs[1], k, ks[0], ks[1], v,
                vs[0], vs[1], out, os[0], os[1], tq, hq, hkv, queryStart, spec.slidingWindow(), spec.scale(), spec.sinks());
    }

    /** bf16v4: bf16 copies of k and v, then ab4_forward (4 warps, 64 queries a block, 64 keys a tile), lse unless null. */
    private void prefillStaged(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec, Tensor lse) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = k.size(0);
        int hkv = k.size(1);
        long kn = (long) s * hkv * d;
        // bf16 k, v [S, Hkv, D], contiguous
        Tensor staged = ctx.scratch(CudaContext.Scratch.ATTENTION_BF16, DType.BF16, forwardStagingElements("bf16v4", s, hkv, d));
        Tensor k16 = staged.slice(0, 0, kn);
        Tensor v16 = staged.slice(0, kn, 2 * kn);
        long[] qs = q.strides();
        long[] ks = k.strides();
        long[] vs = v.strides();
        long[] os = out.strides();
        Launcher.launch(toBf16Pair, ctx.stream.handle(), (kn / 4 + 255) / 256, 2, 256, 0, k, ks[0], ks[1], k16, v, vs[0], vs[1],
                v16, s, hkv, d);
        Kernel kernel = d == 64 ? b4Forward64 : b4Forward128;
        int rows = 64;
        int shared = 2 * (rows * (d + 8) + 2 * B3_BN * (2 * d + 16));
        kernel.allowDynamicShared(shared);
        long tiles = (tq + rows - 1) / rows;
        Launcher.launch(kernel, ctx.stream.handle(), tiles * hq, 1, 128, shared, q, qs[0], qs[1], k16, v16, out, os[0], os[1],
                tq, hq, hkv, queryStart, spec.slidingWindow(), spec.scale(), spec.sinks(), lse);
    }

    /** bf16 elements of the forward's staging copies (k, v [S, Hkv, D]) when the variant stages them ({@code bf16v4}), else 0. */
    static long forwardStagingElements(String variant, int s, int hkv, int d) {
        return variant.equals("bf16v4") ? 2L * s * hkv * d : 0;
    }

    /**
     * The number of blocks that share a kv head's query heads (a divisor of the group): the smallest
     * that gives the dk/dv launch {@link #KV_BLOCKS} blocks ({@link #B_KV_BLOCKS} for bf16), else the
     * whole group. A function of the
     * shapes alone, so the summation order is too.
     */
    static int splits(int s, int hq, int hkv, boolean bf16) {
        return bf16 ? splits(s, hq, hkv, B_BK, B_KV_BLOCKS) : splits(s, hq, hkv, BK, KV_BLOCKS);
    }

    /** As {@link #splits(int, int, int, boolean)} for blocks of keysPerBlock keys and a target of blocks. */
    static int splits(int s, int hq, int hkv, int keysPerBlock, long target) {
        int group = hq / hkv;
        long keyTiles = (s + keysPerBlock - 1) / keysPerBlock;
        int splits = 1;
        for (int p = 1; p <= group; p++) {
            if (group % p == 0) {
                splits = p;
                if (keyTiles * hkv * p >= target) {
                    break;
                }
            }
        }
        return splits;
    }

    /** The most key-tile splits any variant's dk/dv launch uses for these shapes (scratch sizing). */
    static int maxSplits(int s, int hq, int hkv) {
        return Math.max(Math.max(splits(s, hq, hkv, false), splits(s, hq, hkv, true)), splits(s, hq, hkv, 64, 2 * B_KV_BLOCKS));
    }

    /**
     * Attention backward; arguments validated by {@link CudaAttentionBackward}, {@link #fits} holds (dout too).
     * {@code out} and {@code lse} (both or neither): the forward's output and the statistics its {@link #prefill} kept;
     * the {@code bf16v4} backward then takes lse from there and delta = dout·out instead of running the forward again.
     */
    void backward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dout, int queryStart, AttentionSpec spec,
                  Tensor dq, Tensor dk, Tensor dv) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = k.size(0);
        int hkv = k.size(1);
        String variant = variant();
        boolean bf16 = isBf16(variant);
        boolean v2 = variant.equals("bf16v2");
        if (variant.equals("bf16v3") || variant.equals("bf16v4")) {
            boolean v4 = variant.equals("bf16v4");
            backwardStaged(q, k, v, v4 ? out : null, v4 ? lse : null, dout, queryStart, spec, dq, dk, dv, v4 ? 4 : 8);
            return;
        }
        int splits = splits(s, hq, hkv, bf16);
        long items = (long) tq * hq;
        long part = splits > 1 ? (long) splits * s * hkv * d : 0;
        // [2, T, Hq] lse and delta, then the splits' partial dk and dv, each [splits, S, Hkv, D]
        Tensor scratch = ctx.scratch(CudaContext.Scratch.ATTENTION_BACKWARD, DType.F32, 2 * items + 2 * part);
        Tensor rowLse = scratch.slice(0, 0, items);
        Tensor delta = scratch.slice(0, items, 2 * items);
        long[] qs = q.strides();
        long[] ks = k.strides();
        long[] vs = v.strides();
        long[] os = dout.strides();
        long[] dqs = dq.strides();
        int window = spec.slidingWindow();
        float scale = spec.scale();

        Kernel kq = v2 ? (d == 64 ? b2BackwardQ64 : b2BackwardQ128)
                : bf16 ? (d == 64 ? bBackwardQ64 : bBackwardQ128) : d == 64 ? backwardQ64 : backwardQ128;
        int sharedQ = bf16 ? 2 * (B_BM * (2 * d + 16) + 2 * bTile(d) * (2 * d + 16)) : 4 * (BM + BN) * 2 * (d + 4);
        kq.allowDynamicShared(sharedQ);
        int bm = bf16 ? B_BM : BM;
        long qTiles = (tq + bm - 1) / bm;
        boolean[] parts = parts();
        if (parts[0]) {
            Launcher.launch(kq, ctx.stream.handle(), qTiles * hq, 1, bf16 ? B_THREADS : THREADS, sharedQ, q, qs[0], qs[1], k, ks[0],
                    ks[1], v, vs[0], vs[1], dout, os[0], os[1], dq, dqs[0], dqs[1], rowLse, delta, tq, hq, hkv, queryStart, window,
                    scale, spec.sinks());
        }
        if (!parts[1]) {
            return;
        }

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
        Kernel kkv = v2 ? (d == 64 ? b2BackwardKv64 : b2BackwardKv128)
                : bf16 ? (d == 64 ? bBackwardKv64 : bBackwardKv128) : d == 64 ? backwardKv64 : backwardKv128;
        int sharedKv = bf16 ? 2 * (B_BK + 2 * bTile(d)) * (2 * d + 16) + 16 * bTile(d) : 4 * ((BK + BQ) * 2 * (d + 4) + 2 * BQ);
        kkv.allowDynamicShared(sharedKv);
        int bk = bf16 ? B_BK : BK;
        long kTiles = (s + bk - 1) / bk;
        Launcher.launch(kkv, ctx.stream.handle(), kTiles * hkv * splits, 1, bf16 ? B_THREADS : THREADS, sharedKv, q, qs[0], qs[1], k, ks[0],
                ks[1], v, vs[0], vs[1], dout, os[0], os[1], kOut, kS, kH, kP, vOut, vS, vH, vP, rowLse, delta, tq, s, hq, hkv,
                queryStart, window, scale, splits);
        if (splits > 1) {
            ctx.launch(sumSplits, ctx.gridFor((long) s * hkv * d, 256), 256, kOut, splits, s, hkv, d, dk,
                    dk.strides()[0], dk.strides()[1]);
            ctx.launch(sumSplits, ctx.gridFor((long) s * hkv * d, 256), 256, vOut, splits, s, hkv, d, dv,
                    dv.strides()[0], dv.strides()[1]);
        }
    }

    /**
     * The bf16v3 (warps = 8) and bf16v4 (warps = 4) backward: bf16 copies of q, dout, k, v, then the
     * ab3 / ab4 kernels, blocks of 16·warps queries (dq) or keys (dk/dv); as {@link #backward} otherwise (out and
     * lse only with warps = 4, the tiles of the forward that wrote lse).
     */
    private void backwardStaged(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dout, int queryStart,
                                AttentionSpec spec, Tensor dq, Tensor dk, Tensor dv, int warps) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = k.size(0);
        int hkv = k.size(1);
        int rows = 16 * warps;                // queries (dq) or keys (dk/dv) a block
        int threads = 32 * warps;
        int splits = warps == 8 ? splits(s, hq, hkv, true) : splits(s, hq, hkv, rows, 2 * B_KV_BLOCKS);
        long items = (long) tq * hq;
        long part = splits > 1 ? (long) splits * s * hkv * d : 0;
        // [2, T, Hq] lse and delta, then the splits' partial dk and dv, each [splits, S, Hkv, D]
        Tensor scratch = ctx.scratch(CudaContext.Scratch.ATTENTION_BACKWARD, DType.F32, 2 * items + 2 * part);
        Tensor stats = scratch.slice(0, 0, items);   // lse, written by the dq launch
        Tensor delta = scratch.slice(0, items, 2 * items);
        long qn = items * d;
        long kn = (long) s * hkv * d;
        // bf16 q, dout [T, Hq, D], then k, v [S, Hkv, D], contiguous
        Tensor staged = ctx.scratch(CudaContext.Scratch.ATTENTION_BF16, DType.BF16, stagingElements("bf16v3", tq, s, hq, hkv, d));
        Tensor q16 = staged.slice(0, 0, qn);
        Tensor do16 = staged.slice(0, qn, 2 * qn);
        Tensor k16 = staged.slice(0, 2 * qn, 2 * qn + kn);
        Tensor v16 = staged.slice(0, 2 * qn + kn, 2 * qn + 2 * kn);
        long[] qs = q.strides();
        long[] ks = k.strides();
        long[] vs = v.strides();
        long[] os = dout.strides();
        long[] dqs = dq.strides();
        boolean[] parts = parts();
        if (parts[0]) {
            Launcher.launch(toBf16Pair, ctx.stream.handle(), (qn / 4 + 255) / 256, 2, 256, 0, q, qs[0], qs[1], q16, dout, os[0],
                    os[1], do16, tq, hq, d);
            Launcher.launch(toBf16Pair, ctx.stream.handle(), (kn / 4 + 255) / 256, 2, 256, 0, k, ks[0], ks[1], k16, v, vs[0], vs[1],
                    v16, s, hkv, d);
        }
        int window = spec.slidingWindow();
        float scale = spec.scale();

        Kernel kq = warps == 8 ? (d == 64 ? b3BackwardQ64 : b3BackwardQ128) : d == 64 ? b4BackwardQ64 : b4BackwardQ128;
        int sharedQ = 2 * (rows * (2 * d + 16) + 2 * B3_BN * (2 * d + 16));
        kq.allowDynamicShared(sharedQ);
        long qTiles = (tq + rows - 1) / rows;
        if (parts[0]) {
            Launcher.launch(kq, ctx.stream.handle(), qTiles * hq, 1, threads, sharedQ, q16, k16, v16, do16, dout, os[0], os[1],
                    dq, dqs[0], dqs[1], stats, delta, tq, hq, hkv, queryStart, window, scale, spec.sinks(), lse, out,
                    out == null ? 0L : out.strides()[0], out == null ? 0L : out.strides()[1]);
        }
        if (!parts[1]) {
            return;
        }

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
        Kernel kkv = warps == 8 ? (d == 64 ? b3BackwardKv64 : b3BackwardKv128) : d == 64 ? b4BackwardKv64 : b4BackwardKv128;
        int bq = bTile3(d);
        int sharedKv = 2 * (rows + 2 * bq) * (2 * d + 16) + 16 * bq;
        kkv.allowDynamicShared(sharedKv);
        long kTiles = (s + rows - 1) / rows;
        Launcher.launch(kkv, ctx.stream.handle(), kTiles * hkv * splits, 1, threads, sharedKv, q16, k16, v16, do16, kOut, kS, kH,
                kP, vOut, vS, vH, vP, stats, delta, tq, s, hq, hkv, queryStart, window, scale, splits);
        if (splits > 1) {
            ctx.launch(sumSplits, ctx.gridFor((long) s * hkv * d, 256), 256, kOut, splits, s, hkv, d, dk,
                    dk.strides()[0], dk.strides()[1]);
            ctx.launch(sumSplits, ctx.gridFor((long) s * hkv * d, 256), 256, vOut, splits, s, hkv, d, dv,
                    dv.strides()[0], dv.strides()[1]);
        }
    }

    /** Queries a streamed tile of the bf16v3 dk/dv kernel (AB3_BQ64 / AB3_BQ128 in attention_bf16.cu). */
    private static int bTile3(int d) {
        return d == 64 ? 64 : 32;
    }
}
