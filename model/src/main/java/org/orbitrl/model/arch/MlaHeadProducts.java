package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.QuantizedTensor;

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

    private void run(Backend b, Tensor src, Tensor kvbW, Block which, Tensor dst, boolean transposed) {
        TensorAllocator a = b.allocator();
        int n = src.size(0);
        int in = src.size(2);
        int out = dst.size(2);
        int group = group(n, Math.max(in, out));
        for (int h0 = 0; h0 < heads; h0 += group) {
            int g = Math.min(group, heads - h0);
            Tensor xs = headMajor(b, src, h0, g);                                              // [G·N, in]
            Tensor ys = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) g * n, out);  // [G·N, out]
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
        Tensor t = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, (long) g * n, d);   // [G·N, d]
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
