package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

import java.util.Arrays;

/**
 * Strided copies between device views (column slices, selected heads, transposes), gpt-oss's
 * clamped SwiGLU and DeepSeek V4's SwiGLU with its limit, forward and backward (kernels in {@code layout.cu}).
 */
final class CudaLayoutOps {
    private static final int EW_BLOCK = 256;
    private static final int MAX_RANK = 4;

    private final CudaContext ctx;
    private final Kernel stridedCopy;
    private final Kernel stridedCopy32;
    private final Kernel stridedCopyVec32;
    private final Kernel clampedSwiglu;
    private final Kernel clampedSwigluBackward;
    private final Kernel limitedSwiglu;
    private final Kernel limitedSwigluBackward;
    private final Kernel copySpans;
    private final DeviceTable spanTable;

    CudaLayoutOps(CudaContext ctx) {
        this.ctx = ctx;
        this.stridedCopy = ctx.kernel("layout", "strided_copy_u32");
        this.stridedCopy32 = ctx.kernel("layout", "strided_copy_u32_i32");
        this.stridedCopyVec32 = ctx.kernel("layout", "strided_copy_u32x4_i32");
        this.clampedSwiglu = ctx.kernel("layout", "clamped_swiglu_f32");
        this.clampedSwigluBackward = ctx.kernel("layout", "clamped_swiglu_backward_f32");
        this.limitedSwiglu = ctx.kernel("layout", "limited_swiglu_f32");
        this.limitedSwigluBackward = ctx.kernel("layout", "limited_swiglu_backward_f32");
        this.copySpans = ctx.kernel("layout", "copy_spans_u32");
        this.spanTable = new DeviceTable(ctx, "span copy table");
    }

    /** dst = src, same shape and dtype (4-byte elements), any strides, at most 4 dimensions. */
    void copy(Tensor src, Tensor dst) {
        ctx.dev("copy source", src);
        ctx.dev("copy destination", dst);
        if (src.dtype() != dst.dtype() || !Arrays.equals(src.shape(), dst.shape())) {
            throw new IllegalArgumentException("copy of " + src + " into " + dst + ": dtype and shape must match");
        }
        if (src.dtype().bytes() != 4) {
            throw new IllegalArgumentException("copy of " + src + ": device strided copies take 4-byte elements (f32, i32)");
        }
        if (src.rank() > MAX_RANK) {
            throw new IllegalArgumentException("copy of " + src + ": at most " + MAX_RANK + " dimensions");
        }
        long n = src.numel();
        if (n == 0) {
            return;
        }
        long[] size = padded(src.shape(), 1);
        long[] s = padded(src.strides(), 0);
        long[] d = padded(dst.strides(), 0);
        if (vectorUnits(src, dst, size, s, d)) {   // 16-byte units: the last dimension and every stride divided by 4
            long units = n / 4;
            ctx.launch(stridedCopyVec32, ctx.gridFor(units, EW_BLOCK), EW_BLOCK, src, dst, (int) units, (int) size[1], (int) size[2],
                    (int) (size[3] / 4), s[0] / 4, s[1] / 4, s[2] / 4, 1L, d[0] / 4, d[1] / 4, d[2] / 4, 1L);
        } else if (n <= Integer.MAX_VALUE) {
            ctx.launch(stridedCopy32, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, src, dst, (int) n, (int) size[1], (int) size[2],
                    (int) size[3], s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3]);
        } else {
            ctx.launch(stridedCopy, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, src, dst, n, size[1], size[2], size[3],
                    s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3]);
        }
    }

    /**
     * Whether a copy can move 16 bytes at a time: its last dimension contiguous on both sides and a multiple of 4
     * elements, every other stride a multiple of 4, both first elements 16-byte aligned, and its count of units within
     * 32 bits.
     */
    static boolean vectorUnits(Tensor src, Tensor dst, long[] size, long[] s, long[] d) {
        if (size[3] % 4 != 0 || s[3] != 1 || d[3] != 1 || src.numel() / 4 > Integer.MAX_VALUE) {
            return false;
        }
        for (int i = 0; i < 3; i++) {
            if (size[i] > 1 && (s[i] % 4 != 0 || d[i] % 4 != 0)) {
                return false;
            }
        }
        return CudaAllocator.address(src) % 16 == 0 && CudaAllocator.address(dst) % 16 == 0;
    }

    /**
     * dsts[i] = srcs[i] for every i ({@link org.orbitrl.kernels.Backend#copySpans}): one launch over a table of the
     * spans' addresses and lengths (uploaded by one copy). Contiguous device tensors of 4-byte elements, pairwise of one
     * size and dtype.
     */
    void copySpans(Tensor[] srcs, Tensor[] dsts) {
        int n = srcs.length;
        if (dsts.length != n) {
            throw new IllegalArgumentException("copySpans: " + n + " sources for " + dsts.length + " destinations");
        }
        int live = 0;
        for (int i = 0; i < n; i++) {
            ctx.devContiguous("copySpans source " + i, srcs[i], srcs[i].dtype());
            ctx.devContiguous("copySpans destination " + i, dsts[i], srcs[i].dtype());
            if (srcs[i].dtype().bytes() != 4 || srcs[i].numel() != dsts[i].numel()) {
                throw new IllegalArgumentException("copySpans: " + srcs[i] + " into " + dsts[i]
                        + " (4-byte elements, one count each side)");
            }
            live += srcs[i].numel() > 0 ? 1 : 0;
        }
        if (live == 0) {
            return;
        }
        java.lang.foreign.MemorySegment h = spanTable.host(3L * live);
        long at = 0;
        long most = 0;
        for (int i = 0; i < n; i++) {
            if (srcs[i].numel() > 0) {
                h.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, at++, CudaAllocator.address(srcs[i]));
                h.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, at++, CudaAllocator.address(dsts[i]));
                h.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, at++, srcs[i].numel());
                most = Math.max(most, srcs[i].numel());
            }
        }
        long table = spanTable.upload(h, 3L * live);
        ctx.launch(copySpans, live, (int) Math.min(EW_BLOCK, Math.max(32, (most / 4 + 31) / 32 * 32)), table, live);
    }

    /** gu f32 [rows, 2I] interleaved -> out f32 [rows, I]. */
    void clampedSwiglu(Tensor gu, float alpha, float limit, Tensor out) {
        long n = checkGated("clampedSwiglu", gu, out);
        ctx.devContiguous("clampedSwiglu out", out, DType.F32);
        if (n > 0) {
            ctx.launch(clampedSwiglu, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, gu, out, n, alpha, limit);
        }
    }

    /** dgu f32 [rows, 2I] (overwritten) from gu [rows, 2I] and dout [rows, I]. */
    void clampedSwigluBackward(Tensor gu, Tensor dout, float alpha, float limit, Tensor dgu) {
        long n = checkGated("clampedSwigluBackward", gu, dout);
        ctx.devContiguous("clampedSwigluBackward dout", dout, DType.F32);
        ctx.devContiguous("clampedSwigluBackward dgu", dgu, DType.F32);
        CudaContext.sameShape("clampedSwigluBackward", gu, dgu);
        if (n > 0) {
            ctx.launch(clampedSwigluBackward, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, gu, dout, dgu, n, alpha, limit);
        }
    }

    /** out = silu(min(gate, limit)) · clamp(up, −limit, limit), contiguous f32 of one shape. */
    void limitedSwiglu(Tensor gate, Tensor up, float limit, Tensor out) {
        long n = checkLimited("limitedSwiglu", gate, up, out);
        if (n > 0) {
            ctx.launch(limitedSwiglu, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, gate, up, out, n, limit);
        }
    }

    /** dgate, dup (overwritten) from dout, given the forward's gate and up; contiguous f32 of one shape. */
    void limitedSwigluBackward(Tensor gate, Tensor up, Tensor dout, float limit, Tensor dgate, Tensor dup) {
        long n = checkLimited("limitedSwigluBackward", gate, up, dout, dgate, dup);
        if (n > 0) {
            ctx.launch(limitedSwigluBackward, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, gate, up, dout, dgate, dup, n, limit);
        }
    }

    /** Every tensor a contiguous f32 device tensor of the first one's shape; returns its elements. */
    private long checkLimited(String op, Tensor first, Tensor... others) {
        ctx.devContiguous(op + " gate", first, DType.F32);
        for (Tensor t : others) {
            ctx.devContiguous(op + " operand", t, DType.F32);
            CudaContext.sameShape(op, first, t);
        }
        return first.numel();
    }

    /** Checks gu [rows, 2I] against [rows, I]; returns rows·I. */
    private long checkGated(String op, Tensor gu, Tensor half) {
        ctx.devContiguous(op + " gu", gu, DType.F32);
        if (half.rank() != gu.rank() || gu.dim(-1) != 2 * half.dim(-1) || gu.numel() != 2 * half.numel()) {
            throw new IllegalArgumentException(op + ": gate_up " + gu + " must be [rows, 2I] for " + half + " [rows, I]");
        }
        return half.numel();
    }

    /** The last {@code v.length} of 4 entries; the leading ones {@code fill}. */
    private static long[] padded(long[] v, long fill) {
        long[] out = new long[MAX_RANK];
        Arrays.fill(out, 0, MAX_RANK - v.length, fill);
        System.arraycopy(v, 0, out, MAX_RANK - v.length, v.length);
        return out;
    }
}
