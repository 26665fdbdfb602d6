package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Cublas;
import org.orbitrl.kernels.cuda.internal.Kernel;

/**
 * Causal multi-query attention with wide heads, forward and backward, as f32 cuBLAS products (no TF32) around two row
 * kernels ({@code mqa.cu}): DeepSeek-V3's and Kimi-K2's latent attention, whose 64-128 query heads share one key and
 * value head of 576 and 512 channels, beyond the tiled attention kernels' head dimensions. With one shared head the
 * queries of all heads are the rows of one product: for a chunk of queries, scores [queries·H, keys] = scale · Q · Kᵀ
 * (the keys up to the chunk's last query), their causal softmax in place, then out = P · V; backward recomputes P and
 * forms dV += Pᵀ·dO, dS = P ⊙ (dO·Vᵀ − rowsum) · scale, dQ = dS · K, dK += dSᵀ · Q. Chunks of queries hold their scores
 * within {@code -Dorbit.cuda.mqaChunkBytes} (256 MiB by default; read at each call). Outside exact mode only (exact mode
 * keeps the kernels whose rows are batch-invariant); no sliding window or sinks. DeepSeek V4's attention
 * ({@link #sinkForward}: one shared key-and-value head, an additive mask, a sink logit a head) takes the same products
 * around its own softmax; in exact mode it and its indexer's scores take the batch-invariant kernels of
 * {@code mqa_exact.cu} ({@link #sinkExact}, {@link #indexerExact}).
 */
final class CudaMqaAttention {
    static final String CHUNK_PROPERTY = "orbit.cuda.mqaChunkBytes";
    private static final long CHUNK_BYTES = 256L << 20;
    private static final int ROW_BLOCK = 256;
    /** Head dimensions up to this are the tiled kernels'; wider shared heads come here. */
    private static final int TILED_MAX_DIM = 128;

    private final CudaContext ctx;
    private final CudaBackend backend;
    private final Kernel softmax;
    private final Kernel softmaxBackward;
    private final Kernel sinkSoftmax;
    private final Kernel indexerScores;
    private final Kernel hcMix;
    private final Kernel hcMix4;
    private final Kernel hcCollapse;
    private final Kernel hcExpand;
    private final Kernel[] sinkExact;   // 1, 2, 4, 8 heads a block
    private final Kernel sinkExactRow;  // a block a (query, head)
    private final Kernel indexerExact;
    private final Kernel indexerExactRows;

    CudaMqaAttention(CudaContext ctx, CudaBackend backend) {
        this.ctx = ctx;
        this.backend = backend;
        this.softmax = ctx.kernel("mqa", "mqa_causal_softmax");
        this.softmaxBackward = ctx.kernel("mqa", "mqa_softmax_backward");
        this.sinkSoftmax = ctx.kernel("mqa", "mqa_masked_sink_softmax");
        this.indexerScores = ctx.kernel("mqa", "mqa_indexer_scores");
        this.hcMix = ctx.kernel("mqa", "hc_mix");
        this.hcMix4 = ctx.kernel("mqa", "hc_mix4");
        this.hcCollapse = ctx.kernel("mqa", "hc_collapse");
        this.hcExpand = ctx.kernel("mqa", "hc_expand");
        this.sinkExact = new Kernel[]{ctx.kernel("mqa_exact", "mqa_sink_attention_exact_w1"),
                ctx.kernel("mqa_exact", "mqa_sink_attention_exact_w2"), ctx.kernel("mqa_exact", "mqa_sink_attention_exact_w4"),
                ctx.kernel("mqa_exact", "mqa_sink_attention_exact_w8")};
        this.sinkExactRow = ctx.kernel("mqa_exact", "mqa_sink_attention_exact_row");
        this.indexerExact = ctx.kernel("mqa_exact", "mqa_indexer_exact");
        this.indexerExactRows = ctx.kernel("mqa_exact", "mqa_indexer_exact_rows");
    }

    /**
     * Whether attention of q [T, Hq, D] over k [S, 1, D], v [S, 1, Dv] comes here: one shared head, a head wider than the
     * tiled kernels take, no window or sinks, and every [T, Hq, ·] operand's rows (t, h) evenly strided.
     */
    static boolean fits(Tensor q, Tensor k, Tensor v, AttentionSpec spec, Tensor... perQuery) {
        if (k.size(1) != 1 || (q.size(2) <= TILED_MAX_DIM && v.size(2) <= TILED_MAX_DIM) || spec.slidingWindow() != 0
                || spec.sinks() != null || off()) {
            return false;
        }
        if (!rowsEven(q)) {
            return false;
        }
        for (Tensor t : perQuery) {
            if (!rowsEven(t)) {
                return false;
            }
        }
        return true;
    }

    /** Rows (t, h) of a [T, H, d] tensor at one stride: t's stride is H times h's. */
    private static boolean rowsEven(Tensor t) {
        long[] s = t.strides();
        return t.size(1) == 1 || s[0] == (long) t.size(1) * s[1];
    }

    private static long chunkBytes() {
        return Long.getLong(CHUNK_PROPERTY, CHUNK_BYTES);
    }

    /** Queries a chunk takes for H heads and up to {@code keys} keys (one at least). */
    private static int chunk(int queries, int heads, int keys) {
        long perQuery = Math.max(1L, (long) heads * keys * DType.F32.bytes());
        return (int) Math.max(1, Math.min(queries, chunkBytes() / perQuery));
    }

    void forward(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int dv = v.size(2);
        int keys = queryStart + tq;
        int qc = chunk(tq, hq, keys);
        Tensor scores = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) qc * hq * keys);
        Cublas cb = ctx.cublas;
        for (int t0 = 0; t0 < tq; t0 += qc) {
            int c = Math.min(qc, tq - t0);
            int rows = c * hq;
            int s = queryStart + t0 + c;   // keys the chunk's last query sees
            // scores [rows, s] = scale · Q [rows, d] · K[0:s]ᵀ
            rowMajor(cb, false, true, rows, s, d, spec.scale(), row(q, t0), (int) q.strides()[1], CudaAllocator.address(k),
                    (int) k.strides()[0], 0f, CudaAllocator.address(scores), s);
            ctx.launch(softmax, rows, ROW_BLOCK, scores, s, s, hq, queryStart + t0);
            // out [rows, dv] = P [rows, s] · V[0:s] [s, dv]
            rowMajor(cb, false, false, rows, dv, s, 1f, CudaAllocator.address(scores), s, CudaAllocator.address(v),
                    (int) v.strides()[0], 0f, row(out, t0), (int) out.strides()[1]);
        }
        ctx.allocator.release(scores);
    }

    /** {@link #fits} for the backward, whose dK and dV [S, 1, ·] must be contiguous too (they are cleared, then summed into). */
    static boolean fitsBackward(Tensor q, Tensor k, Tensor v, AttentionSpec spec, Tensor dout, Tensor dq, Tensor dk, Tensor dv) {
        return fits(q, k, v, spec, dout, dq) && dk.isContiguous() && dv.isContiguous();
    }

    /** dq, dk, dv overwritten. */
    void backward(Tensor q, Tensor k, Tensor v, Tensor dout, int queryStart, AttentionSpec spec, Tensor dq, Tensor dk, Tensor dv) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int dvd = v.size(2);
        int keys = queryStart + tq;
        int qc = chunk(tq, hq, keys);
        Tensor p = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) qc * hq * keys);
        Tensor dp = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) qc * hq * keys);
        Cublas cb = ctx.cublas;
        long ap = CudaAllocator.address(p);
        long adp = CudaAllocator.address(dp);
        int lk = (int) k.strides()[0];
        int lv = (int) v.strides()[0];
        int ldk = (int) dk.strides()[0];
        int ldv = (int) dv.strides()[0];
        backend.zero(dk);   // every chunk adds into dK and dV; keys no query sees keep 0
        backend.zero(dv);
        for (int t0 = 0; t0 < tq; t0 += qc) {
            int c = Math.min(qc, tq - t0);
            int rows = c * hq;
            int s = queryStart + t0 + c;
            float beta = 1f;
            rowMajor(cb, false, true, rows, s, d, spec.scale(), row(q, t0), (int) q.strides()[1], CudaAllocator.address(k), lk, 0f,
                    ap, s);
            ctx.launch(softmax, rows, ROW_BLOCK, p, s, s, hq, queryStart + t0);
            // dV[0:s] (+)= Pᵀ [s, rows] · dO [rows, dv]
            rowMajor(cb, true, false, s, dvd, rows, 1f, ap, s, row(dout, t0), (int) dout.strides()[1], beta,
                    CudaAllocator.address(dv), ldv);
            // dP [rows, s] = dO [rows, dv] · V[0:s]ᵀ, then dS in its place
            rowMajor(cb, false, true, rows, s, dvd, 1f, row(dout, t0), (int) dout.strides()[1], CudaAllocator.address(v), lv, 0f,
                    adp, s);
            ctx.launch(softmaxBackward, rows, ROW_BLOCK, p, dp, s, s, spec.scale());
            // dQ [rows, d] = dS [rows, s] · K[0:s]
            rowMajor(cb, false, false, rows, d, s, 1f, adp, s, CudaAllocator.address(k), lk, 0f, row(dq, t0), (int) dq.strides()[1]);
            // dK[0:s] (+)= dSᵀ [s, rows] · Q [rows, d]
            rowMajor(cb, true, false, s, d, rows, 1f, adp, s, row(q, t0), (int) q.strides()[1], beta, CudaAllocator.address(dk), ldk);
        }
        ctx.allocator.release(p);
        ctx.allocator.release(dp);
    }

    /**
     * Whether {@link org.orbitrl.kernels.Backend#sinkAttention} takes these operands here: f32, contiguous, q [T, H, d],
     * kv [S, d], mask [T, S], sinks [H] and each gradient or output the shape of its value; not with
     * {@code -Dorbit.cuda.mqa=off} (read at each call: the caller's host computation then). Throws, naming every
     * shape, for operands whose shapes do not agree.
     */
    static boolean fitsSink(Tensor q, Tensor kv, Tensor mask, Tensor sinks, Tensor... likeQOrKv) {
        if (q.rank() != 3 || kv.rank() != 2 || mask.rank() != 2 || sinks.rank() != 1 || q.size(2) != kv.size(1)
                || mask.size(0) != q.size(0) || mask.size(1) != kv.size(0) || sinks.size(0) != q.size(1)) {
            throw new IllegalArgumentException("sink attention: expected q [T, H, d], kv [S, d], mask [T, S], sinks [H]; got q "
                    + java.util.Arrays.toString(q.shape()) + ", kv " + java.util.Arrays.toString(kv.shape()) + ", mask "
                    + java.util.Arrays.toString(mask.shape()) + ", sinks " + java.util.Arrays.toString(sinks.shape()));
        }
        return !off() && f32Contiguous(q, kv, mask, sinks) && f32Contiguous(likeQOrKv);
    }

    /** {@code -Dorbit.cuda.mqa=off} (read at each call): the products of this class are not taken. */
    static boolean off() {
        return "off".equals(System.getProperty("orbit.cuda.mqa"));
    }

    static boolean f32Contiguous(Tensor... ts) {
        for (Tensor t : ts) {
            if (t.dtype() != DType.F32 || !t.isContiguous()) {
                return false;
            }
        }
        return true;
    }

    /**
     * DeepSeek V4's attention ({@link org.orbitrl.kernels.Backend#sinkAttention}): for a chunk of queries, scores
     * [queries·H, S] = scale · Q · KVᵀ, the masked softmax with each head's sink in place, then out = P · KV.
     */
    void sinkForward(Tensor q, Tensor kv, Tensor mask, Tensor sinks, float scale, Tensor out) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = kv.size(0);
        int qc = chunk(tq, hq, s);
        Tensor scores = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) qc * hq * s);
        Cublas cb = ctx.cublas;
        long akv = CudaAllocator.address(kv);
        for (int t0 = 0; t0 < tq; t0 += qc) {
            int c = Math.min(qc, tq - t0);
            int rows = c * hq;
            rowMajor(cb, false, true, rows, s, d, scale, row(q, t0), d, akv, d, 0f, CudaAllocator.address(scores), s);
            ctx.launch(sinkSoftmax, rows, ROW_BLOCK, scores, maskRow(mask, t0), sinks, s, s, hq, s);
            rowMajor(cb, false, false, rows, d, s, 1f, CudaAllocator.address(scores), s, akv, d, 0f, row(out, t0), d);
        }
        ctx.allocator.release(scores);
    }

    /** The most hyper-connection streams {@link #hyperConnectionMix} takes. */
    static final int HC_MAX = 8;

    /**
     * Whether {@link org.orbitrl.kernels.Backend#hyperConnectionMix} takes these operands here (f32, contiguous, hc up to
     * {@link #HC_MAX}); throws, naming the shapes, where they do not agree.
     */
    static boolean fitsHyperConnectionMix(Tensor m, Tensor base, int hc, Tensor y) {
        int mm = (2 + hc) * hc;
        if (hc < 1 || m.rank() != 2 || m.size(1) != mm || base.rank() != 1 || base.size(0) != mm
                || !java.util.Arrays.equals(m.shape(), y.shape())) {
            throw new IllegalArgumentException("hyper-connection mixes: expected m and y [N, " + mm + "] and base [" + mm
                    + "] for " + hc + " streams; got m " + java.util.Arrays.toString(m.shape()) + ", base "
                    + java.util.Arrays.toString(base.shape()) + ", y " + java.util.Arrays.toString(y.shape()));
        }
        return hc <= HC_MAX && f32Contiguous(m, base, y);
    }

    /** The mixes ({@link org.orbitrl.kernels.Backend#hyperConnectionMix}), a thread a token row ({@code hc_mix}). */
    void hyperConnectionMix(Tensor m, Tensor base, float s0, float s1, float s2, int hc, int iters, float eps, Tensor y) {
        int rows = m.size(0);
        if (rows == 0) {
            return;
        }
        if (hc == 4) {   // 16 lanes a row (the same bits)
            ctx.launch(hcMix4, (rows + 7) / 8, 128, m, base, y, rows, iters, s0, s1, s2, eps);
        } else {
            ctx.launch(hcMix, (rows + 127) / 128, 128, m, base, y, rows, hc, iters, s0, s1, s2, eps);
        }
    }

    /**
     * Whether {@link org.orbitrl.kernels.Backend#hyperConnectionCollapse} (out [N, H]) or {@code
     * hyperConnectionExpand} (out [N, hc, H], with f [N, H]) takes these operands here (f32, contiguous); throws, naming
     * the shapes, where they do not agree.
     */
    static boolean fitsHyperConnection(Tensor w, Tensor f, Tensor streams, Tensor out) {
        boolean expand = f != null;
        int n = streams.rank() == 3 ? streams.size(0) : -1;
        int hc = streams.rank() == 3 ? streams.size(1) : -1;
        int h = streams.rank() == 3 ? streams.size(2) : -1;
        long[] want = expand ? new long[]{n, hc, h} : new long[]{n, h};
        if (n < 0 || w.rank() != 2 || w.size(0) != n || w.size(1) < (expand ? (2 + hc) * hc : hc)
                || !java.util.Arrays.equals(out.shape(), want)
                || (expand && !java.util.Arrays.equals(f.shape(), new long[]{n, h}))) {
            throw new IllegalArgumentException("hyper-connection " + (expand ? "expansion" : "collapse") + ": expected streams [N, hc, H], w [N, "
                    + (expand ? "(2+hc)·hc" : "≥ hc") + "]" + (expand ? ", f [N, H]" : "") + " and out " + java.util.Arrays.toString(want)
                    + "; got streams " + java.util.Arrays.toString(streams.shape()) + ", w " + java.util.Arrays.toString(w.shape())
                    + (expand ? ", f " + java.util.Arrays.toString(f.shape()) : "") + ", out " + java.util.Arrays.toString(out.shape()));
        }
        return expand ? f32Contiguous(w, f, streams, out) : f32Contiguous(w, streams, out);
    }

    /** The collapse ({@link org.orbitrl.kernels.Backend#hyperConnectionCollapse}), a thread an output ({@code hc_collapse}). */
    void hyperConnectionCollapse(Tensor w, Tensor streams, Tensor y) {
        long total = y.numel();
        if (total > 0) {
            ctx.launch(hcCollapse, (int) ((total + 255) / 256), 256, w, streams, y, streams.size(0), streams.size(1),
                    streams.size(2), w.size(1));
        }
    }

    /** The expansion ({@link org.orbitrl.kernels.Backend#hyperConnectionExpand}), a thread an output ({@code hc_expand}). */
    void hyperConnectionExpand(Tensor w, Tensor f, Tensor streams, Tensor out) {
        long total = out.numel();
        if (total > 0) {
            ctx.launch(hcExpand, (int) ((total + 255) / 256), 256, w, f, streams, out, streams.size(0), streams.size(1),
                    streams.size(2), w.size(1));
        }
    }

    /**
     * The backward of {@link #sinkForward}, recomputing P a chunk at a time: dKV = Pᵀ·dO + dSᵀ·Q over the chunks,
     * dS = P ⊙ (dO·KVᵀ − rowsum) · scale (the sink takes no value, so its gradient is nothing), dQ = dS · KV. dq and dkv
     * overwritten.
     */
    void sinkBackward(Tensor q, Tensor kv, Tensor mask, Tensor sinks, float scale, Tensor dout, Tensor dq, Tensor dkv) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = kv.size(0);
        int qc = chunk(tq, hq, s);
        Tensor p = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) qc * hq * s);
        Tensor dp = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) qc * hq * s);
        Cublas cb = ctx.cublas;
        long ap = CudaAllocator.address(p);
        long adp = CudaAllocator.address(dp);
        long akv = CudaAllocator.address(kv);
        long adkv = CudaAllocator.address(dkv);
        for (int t0 = 0; t0 < tq; t0 += qc) {
            int c = Math.min(qc, tq - t0);
            int rows = c * hq;
            float beta = t0 == 0 ? 0f : 1f;
            rowMajor(cb, false, true, rows, s, d, scale, row(q, t0), d, akv, d, 0f, ap, s);
            ctx.launch(sinkSoftmax, rows, ROW_BLOCK, p, maskRow(mask, t0), sinks, s, s, hq, s);
            // dKV (+)= Pᵀ [s, rows] · dO [rows, d]
            rowMajor(cb, true, false, s, d, rows, 1f, ap, s, row(dout, t0), d, beta, adkv, d);
            // dP [rows, s] = dO [rows, d] · KVᵀ, then dS in its place
            rowMajor(cb, false, true, rows, s, d, 1f, row(dout, t0), d, akv, d, 0f, adp, s);
            ctx.launch(softmaxBackward, rows, ROW_BLOCK, p, dp, s, s, scale);
            // dQ [rows, d] = dS [rows, s] · KV
            rowMajor(cb, false, false, rows, d, s, 1f, adp, s, akv, d, 0f, row(dq, t0), d);
            // dKV += dSᵀ [s, rows] · Q [rows, d]
            rowMajor(cb, true, false, s, d, rows, 1f, adp, s, row(q, t0), d, 1f, adkv, d);
        }
        ctx.allocator.release(p);
        ctx.allocator.release(dp);
    }

    /**
     * Whether {@link org.orbitrl.kernels.Backend#indexerScores} takes these operands here: q [T, H, D], keys [M, D],
     * weights [T, H] f32, closed [T] i32, out [T, M] f32, all contiguous; not with {@code -Dorbit.cuda.mqa=off}. Throws,
     * naming every shape, for shapes that do not agree.
     */
    static boolean fitsIndexer(Tensor q, Tensor keys, Tensor weights, Tensor closed, Tensor out) {
        if (q.rank() != 3 || keys.rank() != 2 || weights.rank() != 2 || closed.rank() != 1 || out.rank() != 2
                || keys.size(1) != q.size(2) || weights.size(0) != q.size(0) || weights.size(1) != q.size(1)
                || closed.size(0) != q.size(0) || out.size(0) != q.size(0) || out.size(1) != keys.size(0)) {
            throw new IllegalArgumentException("indexer scores: expected q [T, H, D], keys [M, D], weights [T, H], closed [T], "
                    + "out [T, M]; got q " + java.util.Arrays.toString(q.shape()) + ", keys " + java.util.Arrays.toString(keys.shape())
                    + ", weights " + java.util.Arrays.toString(weights.shape()) + ", closed "
                    + java.util.Arrays.toString(closed.shape()) + ", out " + java.util.Arrays.toString(out.shape()));
        }
        return !off() && closed.dtype() == DType.I32 && closed.isContiguous() && f32Contiguous(q, keys, weights, out);
    }

    /**
     * DeepSeek V4's indexer scores ({@link org.orbitrl.kernels.Backend#indexerScores}): for a chunk of queries, the
     * products [queries·H, M] = Q · Kᵀ (f32 cuBLAS), then a thread an entry of a query sums the heads' weighted relus.
     */
    void indexerScores(Tensor q, Tensor keys, Tensor weights, Tensor closed, float qScale, Tensor out) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int m = keys.size(0);
        if (m == 0) {
            return;
        }
        int qc = Math.min(chunk(tq, hq, m), 65535);
        Tensor s = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) qc * hq * m);
        Cublas cb = ctx.cublas;
        for (int t0 = 0; t0 < tq; t0 += qc) {
            int c = Math.min(qc, tq - t0);
            rowMajor(cb, false, true, c * hq, m, d, 1f, row(q, t0), d, CudaAllocator.address(keys), d, 0f,
                    CudaAllocator.address(s), m);
            ctx.launch2d(indexerScores, (m + ROW_BLOCK - 1) / ROW_BLOCK, c, ROW_BLOCK, s,
                    CudaAllocator.address(weights) + (long) t0 * hq * DType.F32.bytes(),
                    CudaAllocator.address(closed) + (long) t0 * DType.I32.bytes(),
                    CudaAllocator.address(out) + (long) t0 * m * DType.F32.bytes(), m, hq, qScale, m);
        }
        ctx.allocator.release(s);
    }

    /** Head dimensions {@link #sinkExact} takes (a lane holds up to 16 of a head's channels). */
    static final int EXACT_MAX_DIM = 512;
    /** {@code SX_CHUNK} of {@code mqa_exact.cu}: seen keys a chunk. */
    private static final int EXACT_CHUNK = 8;
    /**
     * {@code -Dorbit.cuda.mqaExactWarps=1|2|4|8|row} (read at each call): {@link #sinkExact}'s heads a block, or a block a
     * (query, head); else by shape.
     */
    static final String EXACT_WARPS_PROPERTY = "orbit.cuda.mqaExactWarps";
    /** {@code SR_WARPS} of {@code mqa_exact.cu}: the chunks a block of the block-a-row layout takes at once. */
    private static final int EXACT_ROW_WARPS = 8;
    /** {@code IX_TILE} and {@code IX_THREADS} of {@code mqa_exact.cu}. */
    private static final int INDEXER_TILE = 32;
    private static final int INDEXER_THREADS = 64;
    /** {@code IR_ENTRIES} and {@code IR_THREADS} of {@code mqa_exact.cu}. */
    private static final int INDEXER_ROW_ENTRIES = 32;
    private static final int INDEXER_ROW_THREADS = 256;
    /** Queries up to which {@link #indexerExact} takes a block a query. */
    private static final int INDEXER_ROW_QUERIES = 16;
    /** Dynamic shared memory a block may opt in to on sm_90 and sm_100 (227 KiB). */
    private static final long MAX_SHARED_BYTES = 227L << 10;

    /** Dynamic shared memory of the exact indexer's form a block a query: H heads and 32 entries of D, and the products. */
    private static long indexerRowsBytes(int heads, int d) {
        return ((long) (heads + INDEXER_ROW_ENTRIES) * (d + 1) + (long) heads * INDEXER_ROW_ENTRIES) * DType.F32.bytes();
    }

    /** Whether {@link #indexerExact} takes an index head of {@code d} channels: its tiles' shared memory fits. */
    static boolean fitsIndexerExact(int d) {
        return 2L * INDEXER_TILE * (d + 1) * DType.F32.bytes() <= MAX_SHARED_BYTES;
    }

    /** {@code -Dorbit.cuda.mqaExactIndexer=tiles|rows} (read at each call): {@link #indexerExact}'s form, else by shape. */
    static final String EXACT_INDEXER_PROPERTY = "orbit.cuda.mqaExactIndexer";

    /**
     * Exact mode's DeepSeek V4 attention, the operands as {@link #sinkForward} takes them ({@link #fitsSink}) with a
     * head of at most {@link #EXACT_MAX_DIM} channels: each (query, head) row takes its seen keys in ascending order,
     * eight at a time counted from its first seen key, each eight's softmax terms on their own and then added into the
     * row's in order, every operation fixed by the row's own query, seen keys and sink ({@code mqa_exact.cu}). A query's
     * output is therefore the same bits in a decode step, over only the keys it sees, as in any training forward over a
     * wider key set beside other queries. Many rows: a warp a row, up to 8 heads of a query a block (fewer where that
     * leaves the device's multiprocessors under two blocks each); few rows (a decode step's): a block a row, its warps
     * taking eight chunks at a time. Neither changes a row's bits.
     */
    void sinkExact(Tensor q, Tensor kv, Tensor mask, Tensor sinks, float scale, Tensor out) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        if (tq == 0 || hq == 0) {
            return;
        }
        int vec = d % 4 == 0 && CudaAllocator.address(kv) % 16 == 0 ? 1 : 0;
        int sms = ctx.device.multiprocessors();
        String set = System.getProperty(EXACT_WARPS_PROPERTY);
        if ("row".equals(set) || (set == null && (long) tq * hq < 2L * sms)) {
            if (hq > 65535) {
                throw new IllegalArgumentException("exact sink attention by rows: " + hq + " heads, at most 65535");
            }
            ctx.launch2dShared(sinkExactRow, tq, hq, 32 * EXACT_ROW_WARPS,
                    EXACT_ROW_WARPS * (EXACT_CHUNK * d + d + 2) * DType.F32.bytes(), q, kv, mask, sinks, out, kv.size(0), hq,
                    d, scale, vec);
            return;
        }
        int w = exactWarps(set, tq, hq, sms);
        ctx.launch2dShared(sinkExact[Integer.numberOfTrailingZeros(w)], tq, (hq + w - 1) / w, 32 * w,
                2 * EXACT_CHUNK * d * DType.F32.bytes(), q, kv, mask, sinks, out, kv.size(0), hq, d, scale, vec);
    }

    /**
     * Heads a block of {@link #sinkExact}'s warp-a-row layout: {@code set} (the property's value), else the most of 8,
     * 4, 2 that still gives every multiprocessor two blocks, else 1.
     */
    private static int exactWarps(String set, int queries, int heads, int multiprocessors) {
        if (set != null) {
            int w;
            try {
                w = Integer.parseInt(set);
            } catch (NumberFormatException e) {
                w = 0;
            }
            if (w != 1 && w != 2 && w != 4 && w != 8) {
                throw new IllegalArgumentException("-D" + EXACT_WARPS_PROPERTY + "=" + set + ": expected 1, 2, 4, 8 or row");
            }
            return w;
        }
        for (int w = 8; w > 1; w /= 2) {
            if ((long) queries * ((heads + w - 1) / w) >= 2L * multiprocessors) {
                return w;
            }
        }
        return 1;
    }

    /**
     * Exact mode's indexer scores, the operands as {@link #indexerScores} takes them ({@link #fitsIndexer}): tiles of
     * 32 queries by 32 entries on CUDA cores, or for up to 16 queries a block a query and 32 entries, each score's heads
     * summed in order over dot products taken in channel order ({@code mqa_exact.cu}; both forms the same bits), so
     * that a query's scores do not depend on the queries or entries beside it.
     */
    void indexerExact(Tensor q, Tensor keys, Tensor weights, Tensor closed, float qScale, Tensor out) {
        int tq = q.size(0);
        int m = keys.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        if (tq == 0 || m == 0) {
            return;
        }
        String form = System.getProperty(EXACT_INDEXER_PROPERTY,
                tq <= INDEXER_ROW_QUERIES && indexerRowsBytes(hq, d) <= MAX_SHARED_BYTES ? "rows" : "tiles");
        if (form.equals("rows")) {
            if (tq > 65535) {
                throw new IllegalArgumentException("exact indexer scores by rows: " + tq + " queries, at most 65535");
            }
            int shared = (int) indexerRowsBytes(hq, d);
            ctx.launch2dShared(indexerExactRows, (m + INDEXER_ROW_ENTRIES - 1) / INDEXER_ROW_ENTRIES, tq, INDEXER_ROW_THREADS,
                    shared, q, keys, weights, closed, out, tq, m, hq, d, qScale);
            return;
        }
        if (!form.equals("tiles")) {
            throw new IllegalArgumentException("-D" + EXACT_INDEXER_PROPERTY + "=" + form + ": expected tiles or rows");
        }
        int tiles = (tq + INDEXER_TILE - 1) / INDEXER_TILE;
        if (tiles > 65535) {
            throw new IllegalArgumentException("exact indexer scores: " + tq + " queries, at most " + 65535 * INDEXER_TILE);
        }
        ctx.launch2dShared(indexerExact, (m + INDEXER_TILE - 1) / INDEXER_TILE, tiles, INDEXER_THREADS,
                2 * INDEXER_TILE * (d + 1) * DType.F32.bytes(), q, keys, weights, closed, out, tq, m, hq, d, qScale);
    }

    /** The address of mask row t0 of a contiguous [T, S] mask. */
    private static long maskRow(Tensor mask, int t0) {
        return CudaAllocator.address(mask) + (long) t0 * mask.size(1) * DType.F32.bytes();
    }

    /** The address of query t0's first row of a [T, H, ·] tensor. */
    private static long row(Tensor t, int t0) {
        return CudaAllocator.address(t) + (long) t0 * t.strides()[0] * DType.F32.bytes();
    }

    /**
     * Row-major C [m, n] (ldc) = alpha · op(A) [m, k] · op(B) [k, n] + beta · C, A stored [m, k] (lda) or, transposed,
     * [k, m]; B [k, n] (ldb) or, transposed, [n, k]; all f32. cuBLAS is column-major: Cᵀ = op(B)ᵀ · op(A)ᵀ.
     */
    private static void rowMajor(Cublas cb, boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda,
                                 long b, int ldb, float beta, long c, int ldc) {
        cb.gemm(transB, transA, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc, false);
    }
}
