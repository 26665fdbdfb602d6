package org.orbitrl.kernels;

import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * The compute seam. The CPU backend (Vector API) and the CUDA backend implement the same
 * operations with the same contracts, so model code is written once.
 *
 * <p>Conventions, for every operation unless it says otherwise:
 * <ul>
 *   <li>Activations are f32. Weights may be f32 or bf16 ({@link #matmul}) or quantized
 *       ({@link #matmulQuantized}).</li>
 *   <li>"Rows" means all leading dimensions flattened: a [B, T, H] tensor has B*T rows of H.
 *       Arguments must be contiguous unless stated; outputs are written, never accumulated,
 *       unless the method says "accumulate".</li>
 *   <li>Output may alias input only where stated ("in place").</li>
 *   <li>Shapes are checked; a mismatch throws {@link IllegalArgumentException} naming the
 *       argument, the expected shape and the actual one.</li>
 * </ul>
 */
public interface Backend extends AutoCloseable {

    /** A short name for logs: {@code "cpu"}, {@code "cpu-scalar"}, {@code "cuda:0"}. */
    String name();

    /** Allocates tensors that this backend's kernels can read and write. */
    TensorAllocator allocator();

    // ------------------------------------------------------------------ linear algebra

    /**
     * {@code y = x · wᵀ}: x [rows, K] f32, w [N, K] f32 or bf16, y [rows, N] f32.
     * Every output element is the dot product of a row of x and a row of w; in exact mode the
     * reduction order depends only on K, never on the number of rows or a row's position.
     */
    void matmul(Tensor x, Tensor w, Tensor y);

    /**
     * {@code ys[i] = x · ws[i]ᵀ} for weights that read the same x (an attention block's q, k and v, or their LoRAs' A):
     * the numbers of a {@link #matmul} each, which is what this default does; a backend may share the work on x (one
     * rounding of x, one launch).
     */
    default void matmulShared(Tensor x, Tensor[] ws, Tensor[] ys) {
        if (ws.length != ys.length) {
            throw new IllegalArgumentException("matmulShared: " + ws.length + " weights for " + ys.length + " outputs");
        }
        for (int i = 0; i < ws.length; i++) {
            matmul(x, ws[i], ys[i]);
        }
    }

    /** A low-rank term of {@link #matmulLowRank}: {@code scale · (x · aᵀ) · bᵀ}, a f32 [r, K], b f32 [N, r]. */
    record LowRankTerm(Tensor a, Tensor b, float scale) {
    }

    /**
     * {@code ys[i] = x · ws[i]ᵀ + terms[i].scale · (x · terms[i].aᵀ) · terms[i].bᵀ} (a null term adds nothing) for dense
     * weights that read the same x (an attention block's q, k and v with their LoRAs, or one projection), where the
     * backend has a fused form for this call: it then writes every ys[i] and returns true. Its numbers are those of
     * {@link #matmulShared} followed by the terms (each {@link #matmul} of the A, then {@link #matmulAxpy} of the B),
     * within f32 rounding. Returns false without writing anything where there is none (here, and in exact mode): the
     * caller then runs those steps.
     */
    default boolean matmulLowRank(Tensor x, Tensor[] ws, LowRankTerm[] terms, Tensor[] ys) {
        return false;
    }

    /**
     * A hint, no operation: the frozen tensors given (weights no step writes, such as the next layer's q, k and v at a
     * decode step) are read soon, so a device backend may ask its cache for their bytes while the launches before that
     * read leave its memory bandwidth idle. It changes no value. The CUDA backend hands them to the next launch that can
     * carry the ask (the router of a decode step's few tokens), with {@code -Dorbit.cuda.l2Ahead=on|bulk}; each call
     * replaces the asks not yet carried. Here nothing is done.
     */
    default void prefetchFrozen(Tensor... frozen) {
    }

    /**
     * {@code ys[i] = rmsnorm(x) · ws[i]ᵀ}, {@code rmsnorm(x) = normWeight ⊙ x / sqrt(mean(x²) + eps)} per row of x, for one
     * to three dense weights that read the same normed x (an attention block's q, k and v at a decode step: the block's
     * input norm folded into its projections), where the backend has a fused form for this call: it then writes every
     * ys[i] and returns true. Its numbers are those of {@link #rmsNorm} followed by {@link #matmulShared}, within f32
     * rounding (the norm's sum may be taken in another order). Returns false without writing anything where there is
     * none (here, and in exact mode): the caller then runs those steps.
     */
    default boolean rmsNormMatmulShared(Tensor x, Tensor normWeight, float eps, Tensor[] ws, Tensor[] ys) {
        return false;
    }

    /**
     * Whether this backend's grouped expert products take routed experts held in {@code format} as stored (a loader
     * asks before it loads a checkpoint whose experts are in that format). The host's take every format.
     */
    default boolean runsExpertsIn(org.orbitrl.kernels.quant.QuantFormat format) {
        return true;
    }

    /** {@code y = x · wᵀ} with a quantized weight [N, K], without materialising w in full precision. */
    void matmulQuantized(Tensor x, QuantizedTensor w, Tensor y);

    /** Dequantizes {@code w} [N, K] into {@code out} [N, K] (f32 or bf16). */
    void dequantize(QuantizedTensor w, Tensor out);

    /**
     * {@code dx = dy · w}: the activation gradient through a frozen weight. dy [rows, N] f32,
     * w [N, K] f32 or bf16, dx [rows, K] f32. The default runs {@link HostOps} on host memory;
     * backends override it with their kernels.
     */
    default void matmulTransposed(Tensor dy, Tensor w, Tensor dx) {
        HostOps.matmulTransposed(dy, w, dx);
    }

    /** {@code dx = dy · w} for a quantized w [N, K], decoding w a row at a time. */
    default void matmulQuantizedTransposed(Tensor dy, QuantizedTensor w, Tensor dx) {
        HostOps.matmulQuantizedTransposed(dy, w, dx);
    }

    /**
     * {@code y = x · wᵀ} with x's rows kept f32: the products of x's f32 values with the weight's exact values (w f32 or
     * bf16 [N, K], or q quantized; exactly one of them non-null), summed in f32, never over bf16-rounded rows (a backend
     * may carry x as two bf16 parts, hi and the rounded rest, which hold each value to within 2^-18 of itself). For a
     * product whose output reaches a discrete choice downstream (DeepSeek V4's grouped output projection feeds the next
     * layers' indexers, whose top-k a bf16 rounding of its rows would move). In exact mode a backend's usual
     * (batch-invariant) product. The default: {@link #matmul} or {@link #matmulQuantized}, which on the host never
     * round x.
     */
    default void matmulF32(Tensor x, Tensor w, QuantizedTensor q, Tensor y) {
        if ((w == null) == (q == null)) {
            throw new IllegalArgumentException("matmulF32: give exactly one of a dense weight and a quantized one, got "
                    + w + " and " + q);
        }
        if (w != null) {
            matmul(x, w, y);
        } else {
            matmulQuantized(x, q, y);
        }
    }

    /**
     * {@link #matmulF32} by a block-diagonal weight, in one call where the backend has a grouped form for it: the
     * quantized q [G · r, K] holds G groups of r rows, and {@code y[t, g] = x[t, g] · (rows g·r .. g·r + r of q)ᵀ} for x
     * f32 [N, G, K] and y f32 [N, G, r], both contiguous (DeepSeek V4's output projection wo_a, a head group a group),
     * with matmulF32's numbers: x's rows kept f32, the weight's exact values, f32 sums. Returns true having written y;
     * false, writing nothing, where there is none (the default, and a backend in exact mode, whose per-group products
     * keep their batch-invariant bits): the caller then multiplies group by group.
     */
    default boolean matmulF32Grouped(Tensor x, QuantizedTensor q, int groups, Tensor y) {
        return false;
    }

    /** {@code dx = dy · w} with dy's rows kept f32, as {@link #matmulF32} for its forward. */
    default void matmulTransposedF32(Tensor dy, Tensor w, QuantizedTensor q, Tensor dx) {
        if ((w == null) == (q == null)) {
            throw new IllegalArgumentException("matmulTransposedF32: give exactly one of a dense weight and a quantized "
                    + "one, got " + w + " and " + q);
        }
        if (w != null) {
            matmulTransposed(dy, w, dx);
        } else {
            matmulQuantizedTransposed(dy, q, dx);
        }
    }

    // ------------------------------------------------------------------ normalisation, activations

    /** {@code out = x / sqrt(mean(x²) + eps) · weight} per row; weight [H] f32 or bf16. In place allowed. */
    void rmsNorm(Tensor x, Tensor weight, float eps, Tensor out);

    /**
     * {@code sum = a + b}, then {@code out = rmsNorm(sum)}: a decoder layer's residual stream after its attention and the
     * norm before its MLP. The values of {@link #add} and {@link #rmsNorm}; a backend may do both in one pass.
     */
    default void addRmsNorm(Tensor a, Tensor b, Tensor sum, Tensor weight, float eps, Tensor out) {
        add(a, b, sum);
        rmsNorm(sum, weight, eps, out);
    }

    /** Softmax over the last dimension, in place. */
    void softmax(Tensor x);

    /** Log-softmax over the last dimension, in place. */
    void logSoftmax(Tensor x);

    /** {@code out = silu(x) = x·sigmoid(x)}. In place allowed. */
    void silu(Tensor x, Tensor out);

    /** {@code out = silu(gate) · up}, all [rows, I]. In place (out = gate or up) allowed. */
    void swiglu(Tensor gate, Tensor up, Tensor out);

    /** {@code out = a + b} elementwise, same shapes. In place allowed. */
    void add(Tensor a, Tensor b, Tensor out);

    /** {@code out = a · b} elementwise, same shapes. In place allowed. */
    void mul(Tensor a, Tensor b, Tensor out);

    /** {@code out = alpha · x}. In place allowed. */
    void scale(Tensor x, float alpha, Tensor out);

    // ------------------------------------------------------------------ positions, attention

    /**
     * Rotary position embedding, in place: x [T, H, D] (last dimension contiguous; leading ones may
     * be strided), positions i32 [T]. Rotates the first {@code table.rotaryDim()} channels of each
     * head; the rest pass through.
     */
    void rope(Tensor x, Tensor positions, RopeTable table);

    /**
     * Causal scaled-dot-product attention for one sequence.
     * q [T, Hq, D], k [S, Hkv, D], v [S, Hkv, Dv], out [T, Hq, Dv]; Hq a multiple of Hkv (GQA).
     * Query t sits at absolute position {@code queryStart + t}; key s at position s. Key s is
     * visible to query t when {@code s <= queryStart + t} and, with a sliding window w > 0,
     * {@code queryStart + t - s < w}. Last dimensions contiguous; leading ones may be strided.
     */
    void attention(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec);

    /**
     * {@link #attention} for a training forward that keeps its softmax statistics for the backward: lse f32 [T, Hq]
     * contiguous, its contents this backend's own (the CUDA backend's tensor-core kernels: each row's log-sum-exp in
     * base 2), read only by this backend's {@link #attentionBackward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
     * int, AttentionSpec, Tensor, Tensor, Tensor)}. Returns whether lse was written; the default keeps none and writes
     * nothing.
     */
    default boolean attentionWithStats(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec,
                                       Tensor lse) {
        attention(q, k, v, out, queryStart, spec);
        return false;
    }

    /** Whether {@link #attentionWithStats} may keep statistics at all (else a caller need not allocate lse); the default: no. */
    default boolean keepsAttentionStats() {
        return false;
    }

    /**
     * Whether {@link #sinkAttention} and {@link #indexerScores} may take their operands now (else a caller keeps them on
     * the host and need not copy them to this backend's memory first); the default: no.
     */
    default boolean takesDeepseekV4Attention() {
        return false;
    }

    /**
     * DeepSeek V4's attention: multi-query attention over one shared key-and-value head with an additive mask and a
     * sink logit a head. q [T, H, d], kv [S, d], mask [T, S] (0 or -inf; a row that hides every key gives 0), sinks
     * [H], out [T, H, d], all f32 and contiguous: for query t and head h, {@code out[t, h] = Σ_j p_j · kv[j]} with p
     * the softmax of {@code [scale · q[t, h]·kv[j] + mask[t, j]]_j ++ [sinks[h]]} without the sink's share. A backend
     * in exact mode computes each (t, h) from that query's row, the keys its mask leaves it and the sink alone, so that
     * it is the same bits whatever the other queries and keys of the call. Returns false, writing nothing, where the
     * backend leaves it to the caller (the default): the caller then computes it on the host.
     */
    default boolean sinkAttention(Tensor q, Tensor kv, Tensor mask, Tensor sinks, float scale, Tensor out) {
        return false;
    }

    /**
     * DeepSeek V4's attention for a decode step, one query a sequence, every sequence in one call: for sequence b and
     * head h, {@code out[b, h]} is {@link #sinkAttention}'s output for query {@code q[b, h]} over b's keys, in order: the
     * rows of {@code windows[b]} ([w_b, d], or null for none), row b of {@code k} (the new token's key), then the rows
     * of {@code entries[b]} ([m_b, d], or null) that {@code chosen[b]} lists (ascending indices; null: every row). q
     * [B, H, d], k [B, d], sinks [H], out [B, H, d]; all f32 and contiguous. Outside exact mode only: returns false,
     * writing nothing, where the backend leaves it to the caller (the default, and any backend in exact mode, whose
     * {@link #sinkAttention} keeps each query's bits), which then attends sequence by sequence.
     */
    default boolean sinkDecodeAttention(Tensor q, Tensor[] windows, Tensor k, Tensor[] entries, int[][] chosen, Tensor sinks,
                                        float scale, Tensor out) {
        return false;
    }

    /**
     * DeepSeek V4's hyper-connection collapse: y f32 [N, H] = the sum over j ascending (from 0) of {@code w[r, j] ·
     * streams[r, j]}, with the pre mixes the first hc columns of w f32 [N, width] and the streams f32 [N, hc, H] (all
     * contiguous); each product rounded, then added in order, as the host's loops form it. Returns false, writing
     * nothing, where the backend leaves it to the caller (the default).
     */
    default boolean hyperConnectionCollapse(Tensor w, Tensor streams, Tensor y) {
        return false;
    }

    /**
     * DeepSeek V4's hyper-connection expansion: out f32 [N, hc, H] = {@code post[r, k] · f[r]} then plus, j ascending,
     * {@code comb[r, j, k] · streams[r, j]}, with post the columns hc + k and comb [j][k] the columns 2·hc + j·hc + k of
     * the mixes w f32 [N, (2+hc)·hc], f f32 [N, H], streams f32 [N, hc, H] (all contiguous); each product rounded, then
     * added in order, as the host's loops form them. Returns false, writing nothing, where the backend leaves it to the
     * caller (the default).
     */
    default boolean hyperConnectionExpand(Tensor w, Tensor f, Tensor streams, Tensor out) {
        return false;
    }

    /**
     * DeepSeek V4's hyper-connection mixes from their projections m [N, (2+hc)·hc] (f32, contiguous) into y (the same
     * shape): per token row, {@code pre = sigmoid(m·s0 + base) + eps} (the first hc), {@code post = 2·sigmoid(m·s1 +
     * base)} (the next hc), and comb [hc, hc] (row-major), each row's softmax of {@code m·s2 + base} plus eps, then
     * {@code 2·iters − 1} Sinkhorn normalisations, columns first and then alternating, each dividing by its sum plus
     * eps. base [(2+hc)·hc] f32. Each row is computed from its own values alone. Returns false, writing nothing, where
     * the backend leaves it to the caller (the default), which then computes it on the host.
     */
    default boolean hyperConnectionMix(Tensor m, Tensor base, float s0, float s1, float s2, int hc, int iters, float eps,
                                       Tensor y) {
        return false;
    }

    /**
     * The backward of {@link #sinkAttention} for the same operands and dout [T, H, d]: dq [T, H, d] and dkv [S, d]
     * overwritten. Returns false, writing nothing, where the backend leaves it to the caller (as {@link #sinkAttention}).
     */
    default boolean sinkAttentionBackward(Tensor q, Tensor kv, Tensor mask, Tensor sinks, float scale, Tensor dout, Tensor dq,
                                          Tensor dkv) {
        return false;
    }

    /**
     * Copies row {@code rows[i]} of src [N, W] into {@code dsts[i]} (W contiguous elements, same dtype) for every i: the
     * rows a decode step appends to each sequence's kept state, as one {@link #copySpans} of the rows.
     */
    default void copyRows(Tensor src, int[] rows, Tensor[] dsts) {
        if (rows.length != dsts.length || src.rank() != 2) {
            throw new IllegalArgumentException("copyRows: " + rows.length + " rows of " + src + " for " + dsts.length
                    + " destinations (a source [N, W] expected)");
        }
        Tensor[] srcs = new Tensor[rows.length];
        for (int i = 0; i < rows.length; i++) {
            if (rows[i] < 0 || rows[i] >= src.size(0)) {
                throw new IllegalArgumentException("copyRows: row " + rows[i] + " of " + src);
            }
            srcs[i] = src.slice(0, rows[i], rows[i] + 1);
        }
        copySpans(srcs, dsts);
    }

    /**
     * Copies {@code srcs[i]} into {@code dsts[i]} (contiguous tensors of this backend's memory, pairwise of one element
     * count and dtype) for every i: the kept rows of a decode step's closing windows gathered for one read back, in one
     * operation where the backend has one (the CUDA backend: one launch over a table of the spans); the default copies
     * them one by one.
     */
    default void copySpans(Tensor[] srcs, Tensor[] dsts) {
        if (srcs.length != dsts.length) {
            throw new IllegalArgumentException("copySpans: " + srcs.length + " sources for " + dsts.length + " destinations");
        }
        for (int i = 0; i < srcs.length; i++) {
            copy(srcs[i].reshape(dsts[i].shape()), dsts[i]);
        }
    }

    /**
     * DeepSeek V4's lightning-indexer scores: for query t and compressed entry m below {@code closed[t]},
     * {@code out[t, m] = Σ_h relu(q[t, h]·keys[m]) · qScale · weights[t, h]}, the heads summed in order; -inf for the
     * entries at or past {@code closed[t]}. q [T, H, D], keys [M, D], weights [T, H] f32, closed [T] i32, out [T, M]
     * f32, all contiguous. Nothing is differentiated (the top-k that reads them is discrete). A backend in exact mode
     * computes each score from its query's rows and its entry alone (the same bits whatever the call's other queries
     * and entries). Returns false, writing nothing, where the backend leaves it to the caller (the default).
     */
    default boolean indexerScores(Tensor q, Tensor keys, Tensor weights, Tensor closed, float qScale, Tensor out) {
        return false;
    }

    /**
     * Writes one token per sequence into a paged cache: row {@code slots[b]} of kCache [rows, Hkv·D]
     * and vCache [rows, Hkv·Dv] gets k[b] and v[b] (k f32 [B, Hkv·D], v f32 [B, Hkv·Dv], slots i32 [B];
     * a negative slot skips the sequence). The caches are f32 or bf16 (both the same; bf16 rounds to
     * nearest even); v and vCache null: no values (they are the keys' leading channels).
     */
    default void pagedKvWrite(Tensor k, Tensor v, Tensor kCache, Tensor vCache, Tensor slots) {
        PagedOps.kvWrite(this, k, v, kCache, vCache, slots);
    }

    /**
     * A decode step's attention inputs, one new token a sequence: q f32 [B, Hq, D] and k f32 [B, Hkv, D] each through an
     * RMSNorm over D per head (weights qNorm and kNorm [D], or null for none) and rope at {@code positions[b]}, q written
     * into qOut f32 [B, Hq, D], k and v f32 [B, Hkv, Dv] into the paged caches at row {@code slots[b]} (as {@link
     * #pagedKvWrite}; a negative slot skips the sequence). The default runs {@link #rmsNorm}, {@link #rope} and {@link
     * #pagedKvWrite}, the numbers of those steps; a backend may fuse them (its own summation order for the norms).
     */
    default void pagedDecodePrep(Tensor q, Tensor k, Tensor v, Tensor qNorm, Tensor kNorm, float eps, Tensor positions, RopeTable rope,
                                 Tensor qOut, Tensor kCache, Tensor vCache, Tensor slots) {
        int b = q.size(0);
        int hq = q.size(1);
        int hkv = k.size(1);
        int d = q.size(2);
        TensorAllocator a = allocator();
        Tensor kOut = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, b, hkv, d);   // [B, Hkv, D]
        for (Tensor[] t : new Tensor[][]{{q, qNorm, qOut}, {k, kNorm, kOut}}) {
            int heads = t[0].size(1);
            if (t[1] != null) {
                rmsNorm(t[0].reshape((long) b * heads, d), t[1], eps, t[2].reshape((long) b * heads, d));
            } else {
                copy(t[0], t[2].reshape(t[0].shape()));
            }
            rope(t[2].reshape(b, heads, d), positions, rope);
        }
        pagedKvWrite(kOut.reshape(b, (long) hkv * d), v.reshape(b, vCache.dim(1)), kCache, vCache, slots);
        a.release(kOut);
    }

    /**
     * Decode attention over a paged KV cache, one query per sequence at position {@code lens[b] − 1}:
     * q f32 [B, Hq, D], kCache [rows, Hkv·D], vCache [rows, Hkv·Dv], tables i32 [B, maxBlocks] (position
     * s of sequence b is row tables[b, s / blockSize]·blockSize + s % blockSize), lens i32 [B], out
     * f32 [B, Hq, Dv]. vCache null: the values are the first Dv channels of each key head's row (a latent cache, whose
     * one entry a token is both; Dv = out's last dimension, at most D). The default gathers and runs {@link #attention}
     * per sequence ({@link PagedOps}).
     */
    default void pagedDecodeAttention(Tensor q, Tensor kCache, Tensor vCache, Tensor tables, Tensor lens, int blockSize,
                                      int kvHeads, Tensor out, AttentionSpec spec) {
        PagedOps.decodeAttention(this, q, kCache, vCache, tables, lens, blockSize, kvHeads, out, spec);
    }

    /**
     * {@link #pagedDecodePrep} and then {@link #pagedDecodeAttention} of the prepared q in one call where the backend
     * has a fused form for these arguments: the same inputs (q [B, Hq, D], k and v [B, Hkv, D] as the projections wrote
     * them), the new keys and values written at {@code slots} as the preparation writes them, and out [B, Hq, D] the
     * attention over each sequence's keys up to {@code lens[b]}. The numbers are those of the two operations up to the
     * order of the sums (not bit for bit); a sequence whose slot is negative attends over its prepared key and value, which
     * are not written.
     *
     * @return false (the default) where the backend has no such form: the caller runs the two operations, and nothing was
     * written
     */
    default boolean pagedDecodePrepAttention(Tensor q, Tensor k, Tensor v, Tensor qNorm, Tensor kNorm, float eps, Tensor positions,
                                             RopeTable rope, Tensor kCache, Tensor vCache, Tensor slots, Tensor tables, Tensor lens,
                                             int blockSize, Tensor out, AttentionSpec spec) {
        return false;
    }

    /**
     * A whole decoder layer of a decode step at one token ({@link DecodeLayer}: attention and routed experts, no adapter)
     * in one call where the backend has a fused form: {@code out = x + o(attention)}, then {@code out += experts(rmsnorm(out))},
     * with the new key and value written into the paged caches at {@code slots[0]} and the attention over the keys of
     * {@code tables} row 0 up to {@code lens[0]} (what {@link #pagedDecodePrep} and {@link #pagedDecodeAttention} take, one
     * sequence). x and out f32 [1, hidden], distinct. The numbers are those of the layer's separate operations up to the
     * order of the sums (not bit for bit).
     *
     * @return false (the default) where the backend has no such form for these arguments: the caller runs the layer's
     * operations, and nothing was written
     */
    default boolean decodeLayer(DecodeLayer layer, Tensor x, Tensor out, Tensor positions, RopeTable rope, Tensor kCache, Tensor vCache,
                                Tensor slots, Tensor tables, Tensor lens, int blockSize) {
        return false;
    }

    /**
     * Whether {@link #decodeLayer} may take a layer now (false: it declines every one, so a caller need not gather the
     * layer's weights or an output for it). False by default.
     */
    default boolean decodesLayers() {
        return false;
    }

    // ------------------------------------------------------------------ backward (activation gradients only)

    /** RMSNorm backward: dx [rows, H] from x and dy (dx may alias dy). The norm weight is frozen. */
    default void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx) {
        BackwardOps.rmsNormBackward(x, weight, eps, dy, dx);
    }

    /** SwiGLU backward: dgate, dup [rows, I] from gate, up and dout. */
    default void swigluBackward(Tensor gate, Tensor up, Tensor dout, Tensor dgate, Tensor dup) {
        BackwardOps.swigluBackward(gate, up, dout, dgate, dup);
    }

    /** RoPE backward, in place on dx [T, H, D]. */
    default void ropeBackward(Tensor dx, Tensor positions, RopeTable table) {
        BackwardOps.ropeBackward(dx, positions, table);
    }

    /** Attention backward for one sequence; dq, dk, dv overwritten. See {@link BackwardOps#attentionBackward}. */
    default void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor dout, int queryStart, AttentionSpec spec,
                                   Tensor dq, Tensor dk, Tensor dv) {
        BackwardOps.attentionBackward(q, k, v, dout, queryStart, spec, dq, dk, dv);
    }

    /**
     * {@link #attentionBackward(Tensor, Tensor, Tensor, Tensor, int, AttentionSpec, Tensor, Tensor, Tensor)} given the
     * forward's output out [T, Hq, Dv] and the statistics lse that {@link #attentionWithStats} wrote for the same
     * inputs, so that the backward need not run the forward's softmax again; the same gradients within the kernels'
     * rounding. The default ignores out and lse.
     */
    default void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dout, int queryStart,
                                   AttentionSpec spec, Tensor dq, Tensor dk, Tensor dv) {
        attentionBackward(q, k, v, dout, queryStart, spec, dq, dk, dv);
    }

    // ------------------------------------------------------------------ selection

    /** Row lookup: ids i32 or i64 [N], table [V, H] f32 or bf16, out [N, H] f32. */
    void embedding(Tensor table, Tensor ids, Tensor out);

    /**
     * Accumulate {@code c [P, Q] += alpha · aᵀ · b} for a [M, P], b [M, Q], all f32: the shape of an
     * adapter weight gradient (reduction over the M tokens in ascending order).
     */
    default void matmulTN(Tensor a, Tensor b, float alpha, Tensor c) {
        HostOps.matmulTN(a, b, alpha, c);
    }

    /** Accumulate {@code y += alpha · x}, same shapes, f32. */
    default void axpy(float alpha, Tensor x, Tensor y) {
        HostOps.axpy(alpha, x, y);
    }

    /**
     * Accumulate {@code y += alpha · x · wᵀ}: x [rows, K] f32, w [N, K] f32 or bf16, y [rows, N] f32 (a LoRA's B
     * product added into its base projection's output). Here {@link #matmul} into a temporary, then {@link #axpy}; a
     * backend may fuse the two (its result then within the f32 rounding of this form; in exact mode, this form).
     */
    default void matmulAxpy(Tensor x, Tensor w, float alpha, Tensor y) {
        addScaled(alpha, y, d -> matmul(x, w, d));
    }

    /**
     * Accumulate {@code dx += alpha · dy · w}: dy [rows, N] f32, w [N, K] f32 or bf16, dx [rows, K] f32 (a LoRA's
     * {@code (dy·B)·A} added into the input gradient). Here {@link #matmulTransposed} into a temporary, then {@link #axpy};
     * a backend may fuse the two as {@link #matmulAxpy}.
     */
    default void matmulTransposedAxpy(Tensor dy, Tensor w, float alpha, Tensor dx) {
        addScaled(alpha, dx, d -> matmulTransposed(dy, w, d));
    }

    /** {@code y += alpha · d} for the d that {@code product} writes into an f32 temporary shaped as y. */
    private void addScaled(float alpha, Tensor y, java.util.function.Consumer<Tensor> product) {
        TensorAllocator a = allocator();
        Tensor d = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, y.shape());
        try {
            product.accept(d);
            axpy(alpha, d, y);
        } finally {
            a.release(d);
        }
    }

    /** dst [n, H] row i = src [N, H] row {@code rows[i]}; rows i32 [n]. */
    default void gatherRows(Tensor src, Tensor rows, Tensor dst) {
        HostOps.gatherRows(src, rows, dst);
    }

    /**
     * Accumulate: dst [N, H] row {@code rows[i]} += {@code weights[i]} · src [n, H] row i, for i in
     * ascending order (a fixed order, so the sum is batch-invariant). rows i32 [n], weights f32 [n]
     * or null for 1.
     */
    default void scatterAddRows(Tensor src, Tensor rows, Tensor weights, Tensor dst) {
        HostOps.scatterAddRows(src, rows, weights, dst);
    }

    /** Accumulate: y [rows, N] += bias [N] for every row. */
    default void addBias(Tensor y, Tensor bias) {
        HostOps.addBias(y, bias);
    }

    /**
     * {@code dst = src} elementwise for tensors of this backend's memory of the same shape and dtype
     * (4-byte elements on a device), any strides: a column slice, a selected head, a transpose.
     * The default copies on the host.
     */
    default void copy(Tensor src, Tensor dst) {
        dst.copyFrom(src);
    }

    /**
     * gpt-oss's clamped SwiGLU on a fused, interleaved gate_up: gu f32 [rows, 2I] (gate 2j, up 2j+1)
     * -> out f32 [rows, I]. See {@link ClampedSwiglu}, the host reference the default runs.
     */
    default void clampedSwiglu(Tensor gu, float alpha, float limit, Tensor out) {
        ClampedSwiglu.forward(gu, alpha, limit, out);
    }

    /** Backward of {@link #clampedSwiglu}: dgu f32 [rows, 2I] (overwritten) from gu and dout [rows, I]. */
    default void clampedSwigluBackward(Tensor gu, Tensor dout, float alpha, float limit, Tensor dgu) {
        ClampedSwiglu.backward(gu, dout, alpha, limit, dgu);
    }

    /**
     * DeepSeek V4's SwiGLU with its limit: out = silu(min(gate, limit)) · clamp(up, −limit, limit), f32 tensors of one
     * shape. See {@link LimitedSwiglu}, the host reference the default runs.
     */
    default void limitedSwiglu(Tensor gate, Tensor up, float limit, Tensor out) {
        LimitedSwiglu.forward(gate, up, limit, out);
    }

    /** Backward of {@link #limitedSwiglu}: dgate and dup (overwritten) from dout, given the forward's gate and up. */
    default void limitedSwigluBackward(Tensor gate, Tensor up, Tensor dout, float limit, Tensor dgate, Tensor dup) {
        LimitedSwiglu.backward(gate, up, dout, limit, dgate, dup);
    }

    /** Per row, the k largest values (descending; ties to the lower index) and their indices (i32). */
    void topk(Tensor x, int k, Tensor values, Tensor indices);

    /** Per row, the index (i32) of the largest value; ties to the lower index. */
    void argmax(Tensor x, Tensor out);

    // ------------------------------------------------------------------ mixture of experts, grouped by expert

    /**
     * The routing choice from router probabilities probs f32 [T, E] (softmax applied): per token the
     * k largest (descending, ties to the lower expert) into chosen f32 [T, k] and ids i32 [T, k], and
     * the routing weights f32 [T, k]: chosen divided by its row sum when {@code normalize}, else chosen.
     */
    default void moeTopk(Tensor probs, int k, boolean normalize, Tensor chosen, Tensor weights, Tensor ids) {
        MoeRoutingHostOps.topk(probs, k, normalize, chosen, weights, ids);
    }

    /**
     * DeepSeek-V3's (and Kimi-K2's) routing choice from router logits f32 [T, E]: scores f32 [T, E] = sigmoid(logits)
     * (in double, rounded to f32; scores may be logits itself); each token's experts are chosen on score + bias (bias f32
     * [E], null for none) among the {@code topkGroups} of {@code groups} equal groups of consecutive experts whose two
     * largest biased scores sum highest (ties to the lower group; the other groups' biased scores count as 0, as
     * transformers masks them), the k largest biased scores, descending, ties to the lower expert, into ids i32 [T, k];
     * weights f32 [T, k] = the chosen experts' unbiased scores, divided by their sum (j ascending) + 1e-20 when
     * {@code normalize}, times {@code scaling}.
     */
    default void moeSigmoidTopk(Tensor logits, Tensor bias, int groups, int topkGroups, int k, boolean normalize, float scaling,
                                Tensor scores, Tensor weights, Tensor ids) {
        MoeRoutingHostOps.sigmoidTopk(logits, bias, groups, topkGroups, k, normalize, scaling, scores, weights, ids);
    }

    /**
     * DeepSeek V4's routing choice from router logits f32 [T, E]: scores f32 [T, E] (may be logits itself) =
     * sqrt(softplus(logits)) when {@code sqrtSoftplus} (softplus(x) = x above 20, else log1p(exp x) in double rounded to
     * f32; its root in double rounded to f32), else the sigmoid as {@link #moeSigmoidTopk} takes it; ids i32 [T, k] = the
     * rows of {@code fixed} (i32 [T, k], a hash layer's experts of each token; null: none) when given, else the k largest
     * of score + bias (bias f32 [E], null for none), descending, ties to the lower expert; weights f32 [T, k] = the chosen
     * experts' scores divided by their sum (j ascending) + 1e-20, times {@code scaling}. A fixed id outside [0, E) is an
     * error.
     */
    default void moeScoreTopk(Tensor logits, boolean sqrtSoftplus, Tensor bias, Tensor fixed, int k, float scaling,
                              Tensor scores, Tensor weights, Tensor ids) {
        MoeRoutingHostOps.scoreTopk(logits, sqrtSoftplus, bias, fixed, k, scaling, scores, weights, ids);
    }

    /**
     * The router-logit gradient of {@link #moeSigmoidTopk} (overwrites dLogits f32 [T, E]): from the routing-weight
     * gradient dWeight f32 [T, k] through the scaling, the renormalisation (when {@code normalize}) and the sigmoid, given
     * the forward's scores [T, E] and ids i32 [T, k]; zero for the experts a token did not choose (the choice itself, and
     * the bias, carry no gradient).
     */
    default void moeSigmoidRouterBackward(Tensor scores, Tensor ids, Tensor dWeight, boolean normalize, float scaling,
                                          Tensor dLogits) {
        MoeRoutingHostOps.sigmoidRouterBackward(scores, ids, dWeight, normalize, scaling, dLogits);
    }

    /**
     * Groups the P = T·k pairs of ids i32 [T, k] (pair p = token·k + j) by expert, stably: offsets
     * i32 [E + 1], order i32 [P] (expert e's pairs are order[offsets[e] .. offsets[e + 1]), ascending)
     * and position i32 [P], its inverse. An id outside [0, E) is an error.
     */
    default void moeGroup(Tensor ids, int experts, Tensor offsets, Tensor order, Tensor position) {
        MoeHostOps.group(ids, experts, offsets, order, position);
    }

    /**
     * Rows of the grouped pairs: dst [P, H] row i = src [T, H] row {@code order[i] / k}, multiplied by
     * {@code weights[order[i]]} (f32 [T, k]) when weights is not null.
     */
    default void moeGather(Tensor src, Tensor order, int k, Tensor weights, Tensor dst) {
        MoeHostOps.gather(src, order, k, weights, dst);
    }

    /**
     * Per expert over its grouped rows: ys [P, N] rows offsets[e] .. offsets[e + 1] = xs [P, K] rows ·
     * W_eᵀ, for experts [N, K]. {@code offsets} [E + 1] on the host. Quantized experts are dequantized
     * {@code chunk} at a time into one reused buffer (chunk ≤ 0: the backend's quantized product).
     */
    default void moeExpertMatmul(Tensor xs, ExpertWeights experts, int[] offsets, Tensor ys, int chunk) {
        MoeHostOps.expertMatmul(this, xs, experts, offsets, ys, chunk, false);
    }

    /**
     * {@link #moeExpertMatmul} of expert sets that read the same grouped rows (an MoE block's gate and up, or their LoRAs'
     * A): ys[i] = xs · experts[i]_eᵀ per expert's rows, the numbers of a call each, which is what this default does; a
     * backend may share the work on xs (one rounding of the rows, one pass over them).
     */
    default void moeExpertMatmulShared(Tensor xs, ExpertWeights[] experts, int[] offsets, Tensor[] ys, int chunk) {
        if (experts.length != ys.length) {
            throw new IllegalArgumentException("moeExpertMatmulShared: " + experts.length + " expert sets for " + ys.length + " outputs");
        }
        for (int i = 0; i < experts.length; i++) {
            moeExpertMatmul(xs, experts[i], offsets, ys[i], chunk);
        }
    }

    /**
     * {@link #moeExpertMatmul} (accumulate false: ys = the products; scale must be 1) or {@link #moeExpertMatmulAccumulate}
     * (accumulate true: ys += scale · the products) with the groups' offsets on the device ({@code offsets} i32 [E + 1], as
     * {@link #moeGroup} writes them; P = xs's rows): nothing is read back, so an inference step's grouped experts can be
     * captured. Returns false, doing nothing, where the backend does not take the call from device offsets (this default,
     * always); the caller then reads them to the host. Where it returns true the bits are those of the host-offset call.
     */
    default boolean moeExpertMatmulRouted(Tensor xs, ExpertWeights experts, Tensor offsets, float scale, Tensor ys, boolean accumulate) {
        return false;
    }

    /**
     * The activation gradient through frozen experts, per expert over its grouped rows: dxs [P, K] =
     * dys [P, N] · W_e. No weight gradient is formed. Chunked as {@link #moeExpertMatmul}.
     */
    default void moeExpertMatmulTransposed(Tensor dys, ExpertWeights experts, int[] offsets, Tensor dxs, int chunk) {
        MoeHostOps.expertMatmul(this, dys, experts, offsets, dxs, chunk, true);
    }

    /**
     * ys [P, N] += scale · (xs [P, K] rows of expert e · W_eᵀ) per expert over its grouped rows, or with
     * {@code transposed} ys [P, K] += scale · (xs [P, N] rows · W_e), for experts [N, K] ({@code offsets}
     * [E + 1] on the host). The same as {@link #moeExpertMatmul} (or {@link #moeExpertMatmulTransposed})
     * with chunk 0 into a temporary followed by {@link #axpy}; a backend may fuse the two.
     */
    default void moeExpertMatmulAccumulate(Tensor xs, ExpertWeights experts, int[] offsets, float scale, Tensor ys, boolean transposed) {
        moeExpertMatmulAccumulate(xs, experts, offsets, scale, ys, transposed, 0);
    }

    /**
     * {@link #moeExpertMatmulAccumulate(Tensor, ExpertWeights, int[], float, Tensor, boolean)} with quantized
     * experts dequantized {@code chunk} at a time as {@link #moeExpertMatmul} does (chunk ≤ 0: the
     * backend's quantized product).
     */
    default void moeExpertMatmulAccumulate(Tensor xs, ExpertWeights experts, int[] offsets, float scale, Tensor ys, boolean transposed,
                                           int chunk) {
        MoeHostOps.expertMatmulAccumulate(this, xs, experts, offsets, scale, ys, transposed, chunk);
    }

    /**
     * The weight gradients of per-expert matrices, per expert over its grouped rows: grads[e] [N, K] +=
     * scale · dys[rows of e]ᵀ · xs[rows of e], for dys f32 [P, N], xs f32 [P, K], {@code offsets} [E + 1]
     * on the host and one f32 gradient a expert (those without rows are not touched and may be null).
     */
    default void moeExpertWeightGrad(Tensor dys, Tensor xs, int[] offsets, float scale, Tensor[] grads) {
        MoeHostOps.expertWeightGrad(this, dys, xs, offsets, scale, grads);
    }

    /**
     * out [T, H] row t (+)= Σ_j weights[t, j] · ys[position[t·k + j]] (j ascending; weights f32 [T, k], or
     * null for 1): grouped rows [P, H] back to their tokens. Overwrites out unless {@code accumulate}.
     */
    default void moeCombineGrouped(Tensor ys, Tensor position, Tensor weights, Tensor out, boolean accumulate) {
        MoeHostOps.combine(ys, position, weights, out, accumulate);
    }

    /**
     * ys [P, N] row r += bias[e] for the expert e whose grouped rows [offsets[e], offsets[e + 1]) hold r: bias f32 [E, N],
     * offsets i32 [E + 1] in backend memory (as {@link #moeGroup} writes them). A frozen expert bias (gpt-oss's) added on
     * the grouped rows in one call, nothing read on the host.
     */
    default void moeExpertBias(Tensor ys, Tensor bias, Tensor offsets) {
        MoeHostOps.expertBias(ys, bias, offsets);
    }

    /**
     * ys [P, N] row p += bias[ids[p]]: rows a (token, expert) pair each, in pair order (ids i32 [P], the routing's
     * choice flattened), bias f32 [E, N]. {@link #moeExpertBias} for the per-pair decode products.
     */
    default void moeExpertBiasPairs(Tensor ys, Tensor bias, Tensor ids) {
        MoeHostOps.expertBiasPairs(ys, bias, ids);
    }

    // ------------------------------------------------------------------ mixture of experts, per routed pair (decode)

    /**
     * Whether a few tokens' routed experts {@code experts} (a decode step's) should run per (token, expert) pair
     * ({@link #moeExpertMatmulPairs}, {@link #moeCombinePairs}) rather than grouped by expert: the pairs' experts
     * are read from ids on the backend, so nothing waits for the host and the step can be captured. False here;
     * a device backend whose pair products take these experts, and are faster than grouping, says so.
     */
    default boolean moePairs(ExpertWeights experts) {
        return false;
    }

    /**
     * Per routed pair: y [P, N] row p (+)= scale · x[p / xDiv] · W_eᵀ with e = ids[p], for ids i32 [T, k]
     * on the backend (P = T·k, pair p = t·k + j), experts [N, K] (f32, bf16 or quantized), x f32 [P / xDiv,
     * K] with xDiv k (a row a token) or 1 (a row a pair). Overwrites y unless {@code accumulate}. An id
     * outside [0, E), or routed to an expert this rank does not hold, is an error.
     *
     * <p>A backend may keep what it derives from {@code ids} (the pairs grouped by expert) for the next calls with
     * the same ids tensor, so a layer's products group their pairs once: write new ids into a new tensor, never
     * into one these calls have read.
     */
    default void moeExpertMatmulPairs(Tensor x, int xDiv, ExpertWeights experts, Tensor ids, float scale, Tensor y, boolean accumulate) {
        MoeHostOps.expertMatmulPairs(this, x, xDiv, experts, ids, scale, y, accumulate);
    }

    /**
     * {@link #moeExpertMatmulPairs} of the same x and ids for each of {@code experts} (the gate's and the up's LoRA A),
     * scale 1, each ys[i] overwritten: the numbers of a call each, which is what this default makes; a backend may take
     * them in one launch.
     */
    default void moeExpertMatmulPairsShared(Tensor x, int xDiv, ExpertWeights[] experts, Tensor ids, Tensor[] ys) {
        if (experts.length != ys.length) {
            throw new IllegalArgumentException("moeExpertMatmulPairsShared: " + experts.length + " expert sets for " + ys.length + " outputs");
        }
        for (int i = 0; i < experts.length; i++) {
            moeExpertMatmulPairs(x, xDiv, experts[i], ids, 1f, ys[i], false);
        }
    }

    /**
     * A LoRA term of {@link #moeSwigluPairs}: {@code scale · lo[p] · B_eᵀ} for pair p routed to expert e, with lo f32
     * [P, r] the pairs' products with the LoRA's A and {@code b} the experts' B, [N, r] each.
     */
    record PairLora(Tensor lo, ExpertWeights b, float scale) {
    }

    /**
     * A decode step's gate, up and SwiGLU per routed pair in one call, where the backend has a fused form:
     * act f32 [P, N] row p = silu(x[p / xDiv] · G_eᵀ + g) · (x[p / xDiv] · U_eᵀ + u) with e = ids[p] and g, u the
     * LoRA terms ({@link PairLora}; null: none); x, ids and xDiv as in {@link #moeExpertMatmulPairs}, and the same
     * contract on ids. Returns false without writing anything where there is none (here): the caller then runs the
     * separate products, the terms and {@link #swiglu}.
     */
    default boolean moeSwigluPairs(Tensor x, int xDiv, ExpertWeights gate, ExpertWeights up, Tensor ids, PairLora gateLora,
                                   PairLora upLora, Tensor act) {
        return false;
    }

    /**
     * One projection of a decode step's routed experts per pair with its LoRA term in one call, where the backend has a
     * fused form: y f32 [P, N] row p = x[p / xDiv] · W_eᵀ + lora (overwritten), as {@link #moeExpertMatmulPairs}
     * otherwise. Returns false without writing anything where there is none (here): the caller then runs the product
     * and adds the term.
     */
    default boolean moeExpertMatmulPairsLora(Tensor x, int xDiv, ExpertWeights experts, Tensor ids, PairLora lora, Tensor y) {
        return false;
    }

    /**
     * A decode step's router in one call, where the backend fuses it: weights f32 [T, k] and ids i32 [T, k] of the k
     * largest of softmax(x · routerᵀ) over the E experts of each token (x f32 [T, hidden], router [E, hidden]), the
     * weights divided by their sum when {@code normalize}: the numbers of {@link #matmul}, {@link #softmax} and {@link
     * #moeTopk} within f32 rounding (of two equal probabilities either expert may be chosen). Returns false without
     * writing anything where there is none (here): the caller then runs those steps.
     */
    default boolean moeRouterTopk(Tensor x, Tensor router, int k, boolean normalize, Tensor weights, Tensor ids) {
        return false;
    }

    /**
     * A decode step's residual add, the norm after its attention and its router in one call, where the backend has a fused
     * form: {@code sum = a + b}, {@code normed = rmsNorm(sum)} ({@link #addRmsNorm}'s values within f32 rounding: the norm's
     * sum may be taken in another order), then {@link #moeRouterTopk} of normed into weights and ids [T, k]. Writes all
     * four and returns true; false without writing anything where there is none (here): the caller then runs {@link
     * #addRmsNorm} and the router. sum and normed must not overlap a or b.
     */
    default boolean addRmsNormRouterTopk(Tensor a, Tensor b, Tensor sum, Tensor normWeight, float eps, Tensor normed,
                                         Tensor router, int k, boolean normalize, Tensor weights, Tensor ids) {
        return false;
    }

    /**
     * A decode step's down products per routed pair, their LoRA terms and the weighting back into the tokens in one
     * call, where the backend has a fused form: out [T, H] row t (+)= Σ_j weights[t, j] · (act[t·k + j] · D_eᵀ + lora)
     * (j ascending, e = ids[t, j]) for act f32 [T·k, I], ids i32 and weights f32 [T, k]; overwrites out unless {@code
     * accumulate}. The numbers of {@link #moeExpertMatmulPairsLora} (or {@link #moeExpertMatmulPairs} and the term) and
     * then {@link #moeCombinePairs}, within f32 rounding. Returns false without writing anything where there is none
     * (here): the caller then runs those steps.
     */
    default boolean moeDownCombinePairs(Tensor act, ExpertWeights down, Tensor ids, PairLora lora, Tensor weights, Tensor out,
                                        boolean accumulate) {
        return false;
    }

    /**
     * out [T, H] row t (+)= Σ_j weights[t, j] · ys[t·k + j] (j ascending) for ys f32 [T·k, H] in pair order
     * and weights f32 [T, k]: the pairs back to their tokens. Overwrites out unless {@code accumulate}.
     */
    default void moeCombinePairs(Tensor ys, Tensor weights, Tensor out, boolean accumulate) {
        MoeHostOps.combinePairs(ys, weights, out, accumulate);
    }

    /**
     * Block-diagonal weight gradient: x and g f32 [M, blocks·bs] with contiguous rows, out f32
     * [blocks, bs, bs] contiguous; out[i] += x_iᵀ · g_i for every block i, x_i being columns
     * [i·bs, (i+1)·bs) of x (OFT's dL/dR_i over a batch of rows).
     */
    default void blockGradTN(Tensor x, Tensor g, int bs, Tensor out) {
        int blocks = out.size(0);
        if (bs <= 0 || x.rank() != 2 || g.rank() != 2 || x.dim(0) != g.dim(0) || x.dim(1) != (long) blocks * bs
                || g.dim(1) != x.dim(1) || out.rank() != 3 || out.dim(1) != bs || out.dim(2) != bs) {
            throw new IllegalArgumentException("blockGradTN: x " + x + ", g " + g + " [M, blocks·" + bs + "] -> out " + out
                    + " [blocks, " + bs + ", " + bs + "] do not agree");
        }
        TensorAllocator a = allocator();
        long m = x.dim(0);
        Tensor xi = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, bs);   // [M, bs] block i of x, contiguous
        Tensor gi = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, bs);
        for (int i = 0; i < blocks; i++) {
            copy(x.slice(1, (long) i * bs, (long) (i + 1) * bs), xi);
            copy(g.slice(1, (long) i * bs, (long) (i + 1) * bs), gi);
            matmulTN(xi, gi, 1f, out.select(0, i));
        }
        a.release(xi);
        a.release(gi);
    }

    /** The routing-weight gradient: dWeight f32 [T, k] at pair p = ⟨dout [T, H] row p / k, ys [P, H] row position[p]⟩. */
    default void moeWeightGrad(Tensor dout, Tensor ys, Tensor position, Tensor dWeight) {
        MoeHostOps.weightGrad(dout, ys, position, dWeight);
    }

    /**
     * The router-logit gradient dLogits f32 [T, E] from the routing-weight gradient dWeight [T, k]:
     * through the top-k renormalisation (when {@code normalize}) and the softmax, given the forward's
     * probs [T, E], chosen and weights [T, k] and ids i32 [T, k] ({@link #moeTopk}).
     */
    default void moeRouterBackward(Tensor probs, Tensor chosen, Tensor weights, Tensor ids, Tensor dWeight, boolean normalize,
                                   Tensor dLogits) {
        MoeRoutingHostOps.routerBackward(probs, chosen, weights, ids, dWeight, normalize, dLogits);
    }

    // ------------------------------------------------------------------ policy log-probs, optimizer

    /**
     * Per-token log-probabilities: out f32 [n] = log softmax(logits[rows[i]] / T)[tokens[i]] for
     * logits f32 [R, V], rows and tokens i32 [n]; T = 0 counts as 1. See {@link PolicyOps}.
     */
    default void tokenLogProbs(Tensor logits, Tensor rows, Tensor tokens, float temperature, Tensor out) {
        PolicyOps.tokenLogProbs(logits, rows, tokens, temperature, out);
    }

    /** Accumulate into dLogits [R, V] the gradient of Σ dLogp[i]·logp_i (rows distinct). See {@link PolicyOps}. */
    default void tokenLogProbsBackward(Tensor logits, Tensor rows, Tensor tokens, Tensor dLogp, float temperature,
                                       Tensor dLogits) {
        PolicyOps.tokenLogProbsBackward(logits, rows, tokens, dLogp, temperature, dLogits);
    }

    /**
     * Draws one token per request from rows of logits f32 [R, V]: requests i32 [{@link SamplingOps#FIELDS}, B]
     * (field-major: row, top-k, stream key, temperature, top-p, min-p), tokens i32 [B], sampledLogp
     * f32 [B] (the token's log-probability under the filtered distribution). A pure function of the
     * row and the request, the same on every backend: see {@link SamplingOps}.
     */
    default void sampleTokens(Tensor logits, Tensor requests, Tensor tokens, Tensor sampledLogp) {
        SamplingOps.sampleTokens(logits, requests, tokens, sampledLogp);
    }

    // ------------------------------------------------------------------ OFT rotation blocks

    /**
     * OFT's rotation blocks from their packed parameters: rotationT f32 [stored, b, b] = R_jᵀ for
     * param f32 [stored, b(b−1)/2] (each row the strict upper triangle of a skew-symmetric Q_j), R_j
     * the exact Cayley map (I − Q)(I + Q)⁻¹ when {@code neumannTerms} is 0, else PEFT's
     * Cayley-Neumann series of that many terms. See {@link OftOps}.
     */
    default void oftRotation(Tensor param, int neumannTerms, Tensor rotationT) {
        OftOps.rotation(param, neumannTerms, rotationT);
    }

    /**
     * Accumulate into grad f32 [stored, b(b−1)/2] the gradient of the parameters of
     * {@link #oftRotation} given dRotation f32 [stored, b, b] = dL/dR_j (R, not transposed). See {@link OftOps}.
     */
    default void oftRotationBackward(Tensor param, Tensor dRotation, int neumannTerms, Tensor grad) {
        OftOps.rotationBackward(param, dRotation, neumannTerms, grad);
    }

    /**
     * OFT's block-diagonal rotation of activations: y f32 [rows, blocks·b] = x·R blockwise (slice i of
     * each row times R_i, or R_0 for one stored block), from rotationT f32 [stored, b, b] = R_jᵀ; with
     * {@code transposed}, x·Rᵀ blockwise. Contiguous, y distinct from x; a row's result does not
     * depend on the other rows. See {@link OftOps#rotate}.
     */
    default void oftRotate(Tensor x, Tensor rotationT, boolean transposed, Tensor y) {
        OftOps.rotate(x, rotationT, transposed, y);
    }

    /**
     * PEFT's coft projection of OFT parameters param f32 [stored, b(b−1)/2], in place: each row whose
     * skew matrix has Frobenius norm above {@code radius} is scaled onto it. See {@link OftOps#project}.
     */
    default void oftProject(Tensor param, double radius) {
        OftOps.project(param, radius);
    }

    /** One AdamW update of a parameter and its moments, in place. See {@link OptimizerOps#adamw}. */
    default void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, OptimizerOps.AdamWStep step) {
        OptimizerOps.adamw(param, grad, m, v, step);
    }

    /** Sum of squares of the finite elements and the first non-finite index of a gradient. */
    default OptimizerOps.GradientStats gradientStats(Tensor grad) {
        return OptimizerOps.gradientStats(grad);
    }

    /**
     * {@link #gradientStats(Tensor)} of each gradient, in order: the same figures, where a device backend waits for its
     * stream once for all of them instead of once a gradient.
     */
    default OptimizerOps.GradientStats[] gradientStats(java.util.List<Tensor> grads) {
        OptimizerOps.GradientStats[] out = new OptimizerOps.GradientStats[grads.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = gradientStats(grads.get(i));
        }
        return out;
    }

    // ------------------------------------------------------------------ capture and replay

    /**
     * Records the work {@code step} issues (returning its output) for replay, e.g. a decode step
     * whose inputs sit in fixed tensors. The step must issue stream work only: its allocations come
     * from an arena the returned step owns (sized by a measuring run of the step; releases reuse it
     * in stream order), and an upload, a host read or a synchronisation inside it throws
     * {@link NotCapturableException}. A device backend may run the step once eagerly before
     * recording it, so its effects must be idempotent for fixed inputs (a cache write of the same
     * values). The default (the host) records nothing: each replay runs the step again under
     * {@link CaptureCheck}, so the same checks hold.
     *
     * @throws NotCapturableException when the backend cannot capture this step (a backend mode
     *         whose kernels read from the host, or the step breaks a rule while being recorded)
     */
    default CapturedStep captureStep(java.util.function.Supplier<Tensor> step) {
        return CapturedStep.rerun(name() + " captured step", step);
    }

    /**
     * {@link #captureStep(java.util.function.Supplier)} of a step over {@code rows} sequences, for a backend whose
     * recording depends on the batch (the default ignores it).
     */
    default CapturedStep captureStep(java.util.function.Supplier<Tensor> step, int rows) {
        return captureStep(step);
    }

    @Override
    default void close() {
    }
}
