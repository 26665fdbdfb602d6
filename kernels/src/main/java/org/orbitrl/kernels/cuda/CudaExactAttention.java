package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

/**
 * Exact mode's causal attention for head dims up to {@value #MAX_DIM} (multiples of 4): tiles of query rows against
 * tiles of 64 keys in shared memory, f32 on CUDA cores ({@code attention_exact.cu}). Each row's arithmetic is fixed by
 * the row alone (the sums and their order are spelled out in the kernel source), so a decode step over the paged cache,
 * a one-query call and a prefill of any length give a query the same bits whichever tile of rows it lands in: a prefill
 * takes 64 rows a block (queries × the heads of a kv head), a decode step one query's heads of a kv head (8 or 16 rows).
 * Wider heads stay with the per-query kernel of {@code attention.cu}, in prefill and decode alike.
 * {@code -Dorbit.cuda.exactAttention=rows} (read once) sends every shape to that kernel, for comparison; the
 * choice is the same for prefill and decode, so the two still agree bit for bit. {@code -Dorbit.cuda.exactAttentionRows=
 * 64|16|8} (read once) sets a prefill block's rows, and {@code -Dorbit.cuda.exactAttentionStages=1|2} whether its
 * 64-row blocks copy the next key tile while they use this one (two buffers); no row's bits depend on either.
 * {@code -Dorbit.cuda.exactDecodeCopy=async|double|plain} (read at each call) sets how the 8- and 16-row blocks of a
 * decode step copy their key and value tiles: {@code async} (the default), every copy of a tile in flight at once by
 * cp.async into one buffer; {@code double}, the next tile copied while this one is used (two buffers, twice the shared
 * memory, so fewer blocks an SM); {@code plain}, each thread's loads one after another. The bits are the same.
 */
final class CudaExactAttention {
    /** Largest head dimension (q/k and v) the tiled kernel takes. */
    static final int MAX_DIM = 128;
    private static final boolean ON = !"rows".equals(System.getProperty("orbit.cuda.exactAttention"));
    private static final int PREFILL_ROWS = Integer.getInteger("orbit.cuda.exactAttentionRows", 64);
    private static final int PREFILL_STAGES = Integer.getInteger("orbit.cuda.exactAttentionStages", 2);
    private static final int KEY_TILE = 64;
    private static final int SCORE_STRIDE = KEY_TILE + 4;

    private final CudaContext ctx;
    private final Kernel rows64;
    private final Kernel rows64Staged;
    private final Kernel[] rows16;   // plain, async, double
    private final Kernel[] rows8;

    CudaExactAttention(CudaContext ctx) {
        this.ctx = ctx;
        this.rows64 = ctx.kernel("attention_exact", "attention_exact_r64");
        this.rows64Staged = ctx.kernel("attention_exact", "attention_exact_r64_s2");
        this.rows16 = new Kernel[] {ctx.kernel("attention_exact", "attention_exact_r16"),
                ctx.kernel("attention_exact", "attention_exact_r16_a"), ctx.kernel("attention_exact", "attention_exact_r16_s2")};
        this.rows8 = new Kernel[] {ctx.kernel("attention_exact", "attention_exact_r8"),
                ctx.kernel("attention_exact", "attention_exact_r8_a"), ctx.kernel("attention_exact", "attention_exact_r8_s2")};
    }

    /** Whether exact mode's attention is this kernel's where the heads fit (and so keeps statistics for the backward). */
    static boolean on() {
        return ON;
    }

    /** Whether heads of d (q, k) and dv (v) channels come here. */
    static boolean fits(int d, int dv) {
        return ON && d > 0 && dv > 0 && d <= MAX_DIM && dv <= MAX_DIM && d % 4 == 0 && dv % 4 == 0;
    }

    /**
     * Causal attention of q [T, Hq, D] at positions queryStart.. over k [S, Hkv, D], v [S, Hkv, Dv] (checked by the
     * caller); lse null or f32 [T, Hq], each row's log-sum-exp (what the tiled backward reads instead of the softmax).
     */
    void prefill(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec, Tensor lse) {
        int tq = q.size(0);
        int group = q.size(1) / k.size(1);
        long[] ks = k.strides();
        long[] vs = v.strides();
        boolean vec = aligned(k, ks) && aligned(v, vs);
        launch(tq, tq == 1 ? 1 : 0, group, q, k, ks[0], ks[1], v, vs[0], vs[1], out, queryStart, spec, vec, null, null, 0, 0,
                lse);
    }

    /** One new query a sequence over a paged cache (as {@link CudaAttentionOps#pagedExact}, checked there). */
    void paged(Tensor q, Tensor kCache, Tensor vCache, Tensor tables, Tensor lens, int blockSize, int hkv, Tensor out,
               AttentionSpec spec) {
        int d = q.size(2);
        int dv = out.size(2);   // the caches are [rows, Hkv·D] and [rows, Hkv·Dv]
        int group = q.size(1) / hkv;
        boolean vec = CudaAllocator.address(kCache) % 16 == 0 && CudaAllocator.address(vCache) % 16 == 0;
        launch(q.size(0), 1, group, q, kCache, (long) hkv * d, d, vCache, (long) hkv * dv, dv, out, 0, spec, vec,
                tables, lens, tables.size(1), blockSize, null);
    }

    /** queriesPerBlock 1 for one query's heads a block (a decode step), 0 for as many queries as 64 rows take. */
    private void launch(int tq, int queriesPerBlock, int group, Tensor q, Tensor k, long kS, long kH, Tensor v, long vS,
                        long vH, Tensor out, int queryStart, AttentionSpec spec, boolean vec, Tensor tables, Tensor lens,
                        int maxBlocks, int blockSize, Tensor lse) {
        int hq = q.size(1);
        int hkv = hq / group;
        int d = q.size(2);
        int dv = out.size(2);
        Kernel kernel;
        int rows;
        int threads;
        int stages = 1;
        if (queriesPerBlock == 1 ? group <= 8 : PREFILL_ROWS == 8) {
            int copy = smallBlockCopy();
            kernel = rows8[copy];
            stages = copy == 2 ? 2 : 1;
            rows = 8;
            threads = 128;
        } else if (queriesPerBlock == 1 ? group <= 16 : PREFILL_ROWS == 16) {
            int copy = smallBlockCopy();
            kernel = rows16[copy];
            stages = copy == 2 ? 2 : 1;
            rows = 16;
            threads = 128;
        } else {
            stages = PREFILL_STAGES == 2 ? 2 : 1;
            kernel = stages == 2 ? rows64Staged : rows64;
            rows = 64;
            threads = 256;
        }
        int hpb = Math.min(group, rows);
        int qpb = queriesPerBlock == 1 ? 1 : rows / hpb;
        long blocks = (long) ((tq + qpb - 1) / qpb) * hkv * ((group + hpb - 1) / hpb);
        long[] qs = q.strides();
        long[] os = out.strides();
        ctx.launchShared(kernel, blocks, threads, sharedBytes(rows, stages, d, dv), q, qs[0], qs[1], k, kS, kH, v, vS, vH, out,
                os[0], os[1], tq, hq, hkv, d, dv, queryStart, spec.slidingWindow(), spec.scale(), spec.sinks(), vec ? 1 : 0,
                qpb, hpb, tables, lens, maxBlocks, blockSize, lse);
    }

    /** How 8- and 16-row blocks copy their tiles: 0 plain loads, 1 cp.async into one buffer, 2 two buffers. */
    static int smallBlockCopy() {
        String copy = System.getProperty("orbit.cuda.exactDecodeCopy", "async");
        return switch (copy) {
            case "plain" -> 0;
            case "async" -> 1;
            case "double" -> 2;
            default -> throw new IllegalArgumentException(
                    "orbit.cuda.exactDecodeCopy: expected async, double or plain, got '" + copy + "'");
        };
    }

    /** The kernel's shared memory: q rows, a key and a value tile a stage, the scores, and three words a row. */
    static int sharedBytes(int rows, int stages, int d, int dv) {
        return 4 * (rows * (d + 4) + stages * KEY_TILE * (d + dv + 8) + rows * SCORE_STRIDE + 3 * rows);
    }

    private static boolean aligned(Tensor t, long[] strides) {
        return CudaAllocator.address(t) % 16 == 0 && strides[0] % 4 == 0 && strides[1] % 4 == 0;
    }
}
