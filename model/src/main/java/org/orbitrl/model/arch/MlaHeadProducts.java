package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.nn.Linear;

/**
 * The absorbed multi-head latent attention's per-head products with kv_b_proj's matrix [H·(nope+v), R]: each head h
 * multiplies its own rows of the matrix (its key block [nope, R] at row h·(nope+v), its value block [v, R] after it).
 * They run as the grouped expert products do ({@link Backend#moeExpertMatmul} and its transposed and weight-gradient
 * forms), the heads as experts and the tokens as each head's rows, so that a group of heads takes a few backend calls
 * instead of several a head (DeepSeek-V3 has 128 heads, Kimi-K2 64). A group's rows are moved head-major into a
 * temporary and back (strided copies); groups hold at most {@value #GROUP_BYTES} bytes of it, so a long training
 * sequence runs in several groups. The numbers are those of one product a head.
 */
final class MlaHeadProducts {
    /** Bytes of a group's head-major temporaries, input and output each, at most (one head at least). */
    static final long GROUP_BYTES = 64L << 20;

    private final int heads;
    private final int nope;
    private final int vd;
    private final int r;

    MlaHeadProducts(int heads, int nope, int vd, int r) {
        this.heads = heads;
        this.nope = nope;
        this.vd = vd;
        this.r = r;
    }

    /** Which block of a head's rows of the matrix. */
    enum Block {
        KEY, VALUE
    }

    private int rows(Block which) {
        return which == Block.KEY ? nope : vd;
    }

    /**
     * dst [N, H, R] = src [N, H, rows] · W_h per head (the block's rows, as {@link Backend#matmulTransposed}); src and dst
     * may be strided views.
     */
    void timesBlock(Backend b, Tensor src, Tensor kvbW, Block which, Tensor dst) {
        run(b, src, kvbW, which, dst, true);
    }

    /** dst [N, H, rows] = src [N, H, R] · W_hᵀ per head (as {@link Backend#matmul}); src and dst may be strided views. */
    void timesBlockT(Backend b, Tensor src, Tensor kvbW, Block which, Tensor dst) {
        run(b, src, kvbW, which, dst, false);
    }

    /**
     * As {@link #timesBlock} of the key block of the LoRA-adapted matrix {@code W + s·B·A} without making it: dst [N, H,
     * R] = src [N, H, nope] · W_h + s · (src · B_h) · A per head, with B_h head h's key rows of B [H·(nope+v), rank] and A
     * [rank, R] (the per-head products of B as those of W, then one product with A for every head's rows). Each row's
     * numbers are its own whatever N (the products row by row, as the backend's are), so that a decode step and a
     * training forward give a token the same bits in exact mode; tokens go in chunks whose temporaries hold at most
     * {@value #GROUP_BYTES} bytes each. dst may be a strided view.
     */
    void timesKeyBlockLowRank(Backend b, Tensor src, Tensor kvbW, Linear.AdapterHook.LowRank lora, Tensor dst) {
        TensorAllocator a = b.allocator();
        int n = src.size(0);
        int rank = lora.a().size(0);
        MlaHeadProducts terms = new MlaHeadProducts(heads, nope, vd, rank);   // B's rows laid out as the matrix's
        int chunk = tokenChunk(n, Math.max(r, nope));
        for (int t0 = 0; t0 < n; t0 += chunk) {
            int c = Math.min(chunk, n - t0);
            Tensor x = src.slice(0, t0, t0 + c);
            Tensor keys = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, c, heads, r);    // [C, H, R]
            timesBlock(b, x, kvbW, Block.KEY, keys);
            Tensor xb = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, c, heads, rank);  // [C, H, rank] = x_h · B_h
            terms.timesBlock(b, x, lora.b(), Block.KEY, xb);
            b.matmulTransposedAxpy(xb.reshape((long) c * heads, rank), lora.a(), lora.scale(),
                    keys.reshape((long) c * heads, r));                                      // += s · xb · A
            a.release(xb);
            b.copy(keys, dst.slice(0, t0, t0 + c));
            a.release(keys);
        }
    }

    /**
     * As {@link #timesBlockT} of the value block of the LoRA-adapted matrix {@code W + s·B·A} without making it: dst [N,
     * H, v] = src [N, H, R] · W_hᵀ + s · (src · Aᵀ) · B_hᵀ per head, B_h head h's value rows of B (see {@link
     * #timesKeyBlockLowRank}). src and dst contiguous.
     */
    void timesValueBlockTLowRank(Backend b, Tensor src, Tensor kvbW, Linear.AdapterHook.LowRank lora, Tensor dst) {
        TensorAllocator a = b.allocator();
        int n = src.size(0);
        int rank = lora.a().size(0);
        MlaHeadProducts terms = new MlaHeadProducts(heads, nope, vd, rank);
        timesBlockT(b, src, kvbW, Block.VALUE, dst);
        int chunk = tokenChunk(n, Math.max(r, vd));
        for (int t0 = 0; t0 < n; t0 += chunk) {
            int c = Math.min(chunk, n - t0);
            Tensor xa = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, (long) c * heads, rank);   // [C·H, rank]
            b.matmul(src.slice(0, t0, t0 + c).reshape((long) c * heads, r), lora.a(), xa);
            Tensor term = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, c, heads, vd);          // [C, H, v]
            terms.timesBlockT(b, xa.reshape(c, heads, rank), lora.b(), Block.VALUE, term);
            a.release(xa);
            b.axpy(lora.scale(), term, dst.slice(0, t0, t0 + c));
            a.release(term);
        }
    }

    /** Tokens a chunk of the LoRA terms' products takes: as many as keep [C, H, width] f32 within the group's bytes. */
    private int tokenChunk(int n, int width) {
        long perToken = Math.max(1L, (long) heads * width * DType.F32.bytes());
        return (int) Math.max(1, Math.min(Math.max(n, 1), GROUP_BYTES / perToken));
    }

    private void run(Backend b, Tensor src, Tensor kvbW, Block which, Tensor dst, boolean transposed) {
        TensorAllocator a = b.allocator();
        int n = src.size(0);
        int in = src.size(2);
        int out = dst.size(2);
        int group = group(n, Math.max(in, out));
        for (int h0 = 0; h0 < heads; h0 += group) {
            int g = Math.min(group, heads - h0);
            Tensor xs = headMajor(b, src, h0, g);                                              // [G·N, in]
            Tensor ys = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, (long) g * n, out);  // [G·N, out]
            ExpertWeights w = weights(kvbW, which, h0, g);
            if (transposed) {
                b.moeExpertMatmulTransposed(xs, w, offsets(g, n), ys, 0);
            } else {
                b.moeExpertMatmul(xs, w, offsets(g, n), ys, 0);
            }
            b.copy(ys.reshape(g, n, out).transpose(0, 1), dst.slice(1, h0, h0 + g));
            a.release(xs);
            a.release(ys);
        }
    }

    /**
     * dW's block rows of every head += dy_hᵀ · x_h (as {@link Backend#matmulTN}): dy [N, H, rows], x [N, H, R], dW f32
     * [H·(nope+v), R] contiguous; dy and x may be strided views.
     */
    void blockGrad(Backend b, Tensor dy, Tensor x, Block which, Tensor dW) {
        TensorAllocator a = b.allocator();
        int n = dy.size(0);
        int group = group(n, Math.max(rows(which), r));
        for (int h0 = 0; h0 < heads; h0 += group) {
            int g = Math.min(group, heads - h0);
            Tensor dys = headMajor(b, dy, h0, g);                                              // [G·N, rows]
            Tensor xs = headMajor(b, x, h0, g);                                                // [G·N, R]
            Tensor[] grads = new Tensor[g];
            for (int i = 0; i < g; i++) {
                long row = rowOf(h0 + i, which);
                grads[i] = dW.slice(0, row, row + rows(which));
            }
            b.moeExpertWeightGrad(dys, xs, offsets(g, n), 1f, grads);
            a.release(dys);
            a.release(xs);
        }
    }

    /** Heads a group takes for n tokens of rows {@code width} wide. */
    private int group(int n, int width) {
        long perHead = Math.max(1L, (long) n * width * DType.F32.bytes());
        return (int) Math.max(1, Math.min(heads, GROUP_BYTES / perHead));
    }

    private long rowOf(int h, Block which) {
        return (long) h * (nope + vd) + (which == Block.KEY ? 0 : nope);
    }

    /** Heads h0 .. h0+g of src [N, H, d] as [g·N, d], head-major, in a temporary. */
    private static Tensor headMajor(Backend b, Tensor src, int h0, int g) {
        int n = src.size(0);
        int d = src.size(2);
        Tensor t = b.allocator().allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, (long) g * n, d);   // [G·N, d]
        b.copy(src.slice(1, h0, h0 + g).transpose(0, 1), t.reshape(g, n, d));
        return t;
    }

    /** Heads h0 .. h0+g's blocks of kvbW as g "experts" [rows, R] (views). */
    private ExpertWeights weights(Tensor kvbW, Block which, int h0, int g) {
        Tensor[] dense = new Tensor[g];
        for (int i = 0; i < g; i++) {
            long row = rowOf(h0 + i, which);
            dense[i] = kvbW.slice(0, row, row + rows(which));
        }
        return new ExpertWeights(rows(which), r, dense, new QuantizedTensor[g]);
    }

    /** Expert offsets of g heads of n rows each: h·n. */
    private static int[] offsets(int g, int n) {
        int[] off = new int[g + 1];
        for (int i = 0; i <= g; i++) {
            off[i] = i * n;
        }
        return off;
    }
}
