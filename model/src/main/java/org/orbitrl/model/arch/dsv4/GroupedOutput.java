package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.Fp8Block128;
import org.orbitrl.kernels.quant.Fp8Block128Ue8m0;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.nn.Weight;

/**
 * DeepSeek V4's block-diagonal output projection {@code wo_a}: head group g of the attention output o [N, groups·in]
 * through its own [r, in] rows of the frozen weight [groups·r, in], into [N, groups·r] (33.5M multiply-adds a token
 * each way at V4-Flash's widths). It runs on the backend, a product a group ({@link Backend#matmulF32}: its rows stay
 * f32, because its output reaches the next layers' indexers, whose top-k a bf16 rounding of these rows moves); o is
 * copied there once, each group's columns gathered into one contiguous operand by {@link Backend#copy}, each product's
 * rows put back into the group's columns of the output, which is copied back once. A backend with a grouped form for
 * the call ({@link Backend#matmulF32Grouped}: an FP8 weight at a decode step's rows on the device) takes every group
 * in one instead. The backward runs a group at a time through {@link Backend#matmulTransposedF32}.
 *
 * <p>The weight stays in its stored form (bf16, or FP8 with 128×128 block scales whose groups start on block rows, each
 * group's rows a view of it), so the planner's count of it holds.
 */
final class GroupedOutput {
    private final Weight whole;      // [groups·r, in], in the backend's memory
    private final Weight[] groups;   // [r, in] each, views of it
    private final int in;
    private final int r;

    /**
     * @param w the weight [groups·r, in], already where the backend reads it; a quantized one in FP8 block form whose
     *          groups start on block rows, or dense
     */
    GroupedOutput(Weight w, int groups, int in, int r) {
        if (w.rows() != (long) groups * r || w.cols() != in) {
            throw new IllegalArgumentException("wo_a: expected [" + (long) groups * r + ", " + in + "] (" + groups
                    + " groups of rank " + r + "), got [" + w.rows() + ", " + w.cols() + "]");
        }
        this.in = in;
        this.r = r;
        this.whole = w;
        this.groups = new Weight[groups];
        for (int g = 0; g < groups; g++) {
            this.groups[g] = rows(w, (long) g * r, (long) (g + 1) * r);
        }
    }

    /** Bytes of its weight, every group's rows. */
    long byteSize() {
        long bytes = 0;
        for (Weight g : groups) {
            bytes += g.byteSize();
        }
        return bytes;
    }

    /** Whether the rows of each group of {@code w} can be viewed in place ({@link #GroupedOutput} needs it). */
    static boolean viewable(Weight w, int r) {
        return switch (w) {
            case Weight.Dense d -> true;
            case Weight.Quantized q -> (q.w().format() == Fp8Block128.INSTANCE || q.w().format() == Fp8Block128Ue8m0.INSTANCE)
                    && r % 128 == 0;
        };
    }

    private static Weight rows(Weight w, long r0, long r1) {
        return switch (w) {
            case Weight.Dense d -> Weight.of(d.w().slice(0, r0, r1));
            case Weight.Quantized q -> {
                if (!viewable(w, Math.toIntExact(r1 - r0))) {
                    throw new IllegalArgumentException("wo_a: a group's rows of " + q.w() + " are not a view of it "
                            + "(FP8 block form with groups of whole 128-row blocks, or a dense weight, expected)");
                }
                QuantizedTensor t = q.w();
                yield Weight.of(new QuantizedTensor(t.format(), r1 - r0, t.cols(), t.codes().slice(0, r0, r1),
                        t.scales().slice(0, r0 / 128, (r1 + 127) / 128), null, 1f));
            }
        };
    }

    int groups() {
        return groups.length;
    }

    /** Tokens up to which a forward copies every group's rows at once (a decode step's batch; more is a training's). */
    static final int FEW_TOKENS = 64;

    /** o [N, groups·in] -> [N, groups·r]. */
    Node forward(GradTape t, Backend b, Node o, int n) {
        TensorAllocator a = b.allocator();
        int g = groups.length;
        boolean keep = Ops.keepsValues(b);
        Tensor x = keep ? o.placed(a, n, g, in) : Ops.device(a, o.v(), n, g, in);   // [N, groups, in]
        Tensor y = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, g, r);
        Node yn;
        try {
            // a backend's grouped form takes every group in one call (a decode step's rows; it declines what it has none for)
            if (!(whole instanceof Weight.Quantized wq && b.matmulF32Grouped(x, wq.w(), g, y))) {
                byGroup(b, x, y, n);
            }
            yn = Ops.made(b, y);
        } catch (RuntimeException e) {
            a.release(y);
            throw e;
        } finally {
            if (!keep) {
                a.release(x);   // not kept: the backward does not read it
            }
        }
        if (t != null) {
            t.record(yn, () -> backward(b, yn.gradPlaced(a, n, g, r), o, n));
        }
        return yn;
    }

    /**
     * y [N, groups, r] from x [N, groups, in] a product a group. A group's rows are a contiguous view of one token's; a
     * few tokens' groups go through one copy each way with the groups leading ([groups, N, ·]: every group's rows
     * contiguous); more, a group at a time (its copies only).
     */
    private void byGroup(Backend b, Tensor x, Tensor y, int n) {
        TensorAllocator a = b.allocator();
        int g = groups.length;
        boolean few = n > 1 && n <= FEW_TOKENS;
        Tensor xg = n == 1 ? null : a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, few ? (long) g * n : n, in);
        Tensor yg = n == 1 ? null : a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, few ? (long) g * n : n, r);
        try {
            if (few) {
                b.copy(x.transpose(0, 1), xg.reshape(g, n, in));
            }
            for (int gi = 0; gi < g; gi++) {
                if (n == 1) {
                    product(b, groups[gi], x.select(1, gi), y.select(1, gi));
                } else if (few) {
                    product(b, groups[gi], xg.slice(0, (long) gi * n, (long) (gi + 1) * n), yg.slice(0, (long) gi * n, (long) (gi + 1) * n));
                } else {
                    b.copy(x.select(1, gi), xg);
                    product(b, groups[gi], xg, yg);
                    b.copy(yg, y.select(1, gi));
                }
            }
            if (few) {
                b.copy(yg.reshape(g, n, r).transpose(0, 1), y);
            }
        } finally {
            Ops.release(a, xg, yg);
        }
    }

    /** Sends dy [N, groups, r] (in the backend's memory) to o's gradient. */
    private void backward(Backend b, Tensor dy, Node o, int n) {
        TensorAllocator a = b.allocator();
        int g = groups.length;
        Tensor dyg = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, r);
        Tensor dxg = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, in);
        Tensor dx = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, g, in);
        try {
            for (int gi = 0; gi < g; gi++) {
                b.copy(dy.select(1, gi), dyg);
                productTransposed(b, groups[gi], dyg, dxg);
                b.copy(dxg, dx.select(1, gi));
            }
        } catch (RuntimeException e) {
            a.release(dx);
            throw e;
        } finally {
            Ops.release(a, dyg, dxg);
        }
        Ops.sendGrad(b, o, dx);
    }

    private static void product(Backend b, Weight w, Tensor x, Tensor y) {
        switch (w) {
            case Weight.Dense d -> b.matmulF32(x, d.w(), null, y);
            case Weight.Quantized q -> b.matmulF32(x, null, q.w(), y);
        }
    }

    private static void productTransposed(Backend b, Weight w, Tensor dy, Tensor dx) {
        switch (w) {
            case Weight.Dense d -> b.matmulTransposedF32(dy, d.w(), null, dx);
            case Weight.Quantized q -> b.matmulTransposedF32(dy, null, q.w(), dx);
        }
    }
}
