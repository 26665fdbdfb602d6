package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

/** Elementwise operations and row reductions (RMSNorm, softmax, log-softmax) on the device. */
final class CudaRowOps {
    private static final int EW_BLOCK = 256;

    private final CudaContext ctx;
    final Kernel add;
    final Kernel mul;
    final Kernel swiglu;
    final Kernel silu;
    private final Kernel scale;
    private final Kernel toBf16;
    private final Kernel toBf16x4;
    private final Kernel rmsnorm;
    private final Kernel rmsnormWarp;
    private final Kernel rmsnormV4;
    private final Kernel addRmsnormV4;
    /**
     * Longer rows of a multiple of 4 values up to {@value #V4_ROW_MAX} are normalized with the row held in registers
     * ({@code rmsnorm_v4_f32}, a block of {@link #v4Block} threads a row); {@code -Dorbit.cuda.v4Norm=off} keeps
     * {@code rmsnorm_f32}.
     */
    private static final boolean V4_NORM = !"off".equals(System.getProperty("orbit.cuda.v4Norm"));
    /** Threads of a v4 block for a model's hidden size, up to {@code V4_VALUES · V4_BLOCK} = 8192 values. */
    static final int V4_BLOCK = 256;
    /** The most threads a v4 block has (RN_MAX_THREADS in norm.cu, the kernels' launch bound). */
    private static final int V4_MAX_BLOCK = 1024;
    /** Values a thread of the v4 kernels holds: RN_V float4s. */
    private static final int V4_VALUES = 8 * 4;
    /** The longest rows the v4 kernels take (DeepSeek V4's hyper-connection norm is 4 · 4096 wide). */
    static final int V4_ROW_MAX = V4_VALUES * V4_MAX_BLOCK;
    /**
     * Rows up to this long (a head's q or k) are normalized a warp a row ({@code rmsnorm_warp_f32}, and its backward),
     * longer ones a block a row; chosen by the row length alone, so a row's value never depends on the rows beside it.
     * {@code -Dorbit.cuda.warpNorm=off}: every row a block (the kernels the warp ones replaced).
     */
    static final int WARP_ROW_MAX = "off".equals(System.getProperty("orbit.cuda.warpNorm")) ? 0 : 512;
    /** Rows a block of the warp-a-row kernels. */
    static final int WARP_ROWS = 8;
    final Kernel softmax;
    final Kernel logSoftmax;
    private final Kernel addRmsnormV2;
    /**
     * {@value} ({@code on|off}, read at each call; on by default): {@link #addRmsNorm} of rows of at most 8 values a thread
     * takes {@code add_rmsnorm_v2_f32} (two float4s a thread where the v4 kernel holds eight: the same sums and bits from
     * 9 KiB of code rather than 23; a one-sequence decode step's add+norm is one block whose code is its time); {@code off}
     * takes the v4 kernel.
     */
    static final String NARROW_NORM_PROPERTY = "orbit.cuda.narrowNorm";

    CudaRowOps(CudaContext ctx) {
        this.ctx = ctx;
        this.add = ctx.kernel("elementwise", "add_f32");
        this.mul = ctx.kernel("elementwise", "mul_f32");
        this.swiglu = ctx.kernel("elementwise", "swiglu_f32");
        this.silu = ctx.kernel("elementwise", "silu_f32");
        this.scale = ctx.kernel("elementwise", "scale_f32");
        this.toBf16 = ctx.kernel("elementwise", "f32_to_bf16");
        this.toBf16x4 = ctx.kernel("elementwise", "f32_to_bf16_x4");
        this.rmsnorm = ctx.kernel("norm", "rmsnorm_f32");
        this.rmsnormWarp = ctx.kernel("norm", "rmsnorm_warp_f32");
        this.rmsnormV4 = ctx.kernel("norm", "rmsnorm_v4_f32");
        this.addRmsnormV4 = ctx.kernel("norm", "add_rmsnorm_v4_f32");
        this.addRmsnormV2 = ctx.kernel("norm", "add_rmsnorm_v2_f32");
        this.softmax = ctx.kernel("norm", "softmax_f32");
        this.logSoftmax = ctx.kernel("norm", "log_softmax_f32");
    }

    /** Whether {@link #NARROW_NORM_PROPERTY} asks for the narrow add-norm kernel. */
    static boolean narrowNorm() {
        return Switches.onOff(NARROW_NORM_PROPERTY, true);
    }

    void binary(String op, Kernel kernel, Tensor a, Tensor b, Tensor out) {
        ctx.devContiguous(op + " a", a, DType.F32);
        ctx.devContiguous(op + " b", b, DType.F32);
        ctx.devContiguous(op + " out", out, DType.F32);
        CudaContext.sameShape(op, a, b);
        CudaContext.sameShape(op, a, out);
        long n = a.numel();
        if (n > 0) {
            ctx.launch(kernel, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, a, b, out, n);
        }
    }

    void unary(String op, Kernel kernel, Tensor x, Tensor out) {
        ctx.devContiguous(op + " x", x, DType.F32);
        ctx.devContiguous(op + " out", out, DType.F32);
        CudaContext.sameShape(op, x, out);
        long n = x.numel();
        if (n > 0) {
            ctx.launch(kernel, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, x, out, n);
        }
    }

    void scale(Tensor x, float alpha, Tensor out) {
        ctx.devContiguous("scale x", x, DType.F32);
        ctx.devContiguous("scale out", out, DType.F32);
        CudaContext.sameShape("scale", x, out);
        long n = x.numel();
        if (n > 0) {
            ctx.launch(scale, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, x, alpha, out, n);
        }
    }

    /** f32 [n] to bf16 [n], round to nearest even. */
    void toBf16(Tensor x, Tensor out, long n) {
        if (n > 0 && n % 4 == 0 && CudaAllocator.address(x) % 16 == 0 && CudaAllocator.address(out) % 8 == 0) {
            ctx.launch(toBf16x4, ctx.gridFor(n / 4, EW_BLOCK), EW_BLOCK, x, out, n / 4);
        } else if (n > 0) {
            ctx.launch(toBf16, ctx.gridFor(n, EW_BLOCK), EW_BLOCK, x, out, n);
        }
    }

    void rmsNorm(Tensor x, Tensor weight, float eps, Tensor out) {
        ctx.devContiguous("rmsNorm x", x, DType.F32);
        ctx.devContiguous("rmsNorm out", out, DType.F32);
        ctx.devContiguous("rmsNorm weight", weight, null);
        CudaContext.sameShape("rmsNorm", x, out);
        int h = x.size(-1);
        checkNormWeight("rmsNorm", weight, h);
        int rows = CudaContext.rows(x);
        if (rows > 0 && h > 0) {
            int v4 = v4Block(h);
            if (h <= WARP_ROW_MAX) {
                ctx.launch(rmsnormWarp, (rows + WARP_ROWS - 1) / WARP_ROWS, 32 * WARP_ROWS, x, weight,
                        weight.dtype() == DType.BF16 ? 1 : 0, out, h, eps, (long) rows);
            } else if (v4 > 0) {
                boolean vec = CudaAllocator.address(x) % 16 == 0 && CudaAllocator.address(out) % 16 == 0;
                ctx.launch(rmsnormV4, rows, v4, x, weight, weight.dtype() == DType.BF16 ? 1 : 0, out, h, eps, vec ? 1 : 0);
            } else {
                ctx.launch(rmsnorm, rows, rowBlock(h), x, weight, weight.dtype() == DType.BF16 ? 1 : 0, out, h, eps);
            }
        }
    }

    /**
     * {@link org.orbitrl.kernels.Backend#addRmsNorm}: one {@code add_rmsnorm_v4_f32} launch where {@link #rmsNorm} takes
     * {@code rmsnorm_v4_f32} (the same values as the add and that norm), else the two.
     */
    void addRmsNorm(Tensor a, Tensor b, Tensor sum, Tensor weight, float eps, Tensor out) {
        ctx.devContiguous("addRmsNorm a", a, DType.F32);
        ctx.devContiguous("addRmsNorm b", b, DType.F32);
        ctx.devContiguous("addRmsNorm sum", sum, DType.F32);
        ctx.devContiguous("addRmsNorm out", out, DType.F32);
        ctx.devContiguous("addRmsNorm weight", weight, null);
        CudaContext.sameShape("addRmsNorm a and b", a, b);
        CudaContext.sameShape("addRmsNorm a and sum", a, sum);
        CudaContext.sameShape("addRmsNorm a and out", a, out);
        int h = a.size(-1);
        checkNormWeight("addRmsNorm", weight, h);
        int rows = CudaContext.rows(a);
        int v4 = v4Block(h);
        if (h > WARP_ROW_MAX && v4 > 0 && rows > 0) {
            boolean vec = aligned16(a) && aligned16(b) && aligned16(sum) && aligned16(out);
            boolean narrow = h <= 8 * v4 && narrowNorm();
            ctx.launch(narrow ? addRmsnormV2 : addRmsnormV4, rows, v4, a, b, sum, weight, weight.dtype() == DType.BF16 ? 1 : 0, out,
                    h, eps, vec ? 1 : 0);
        } else {
            binary("add", add, a, b, sum);
            rmsNorm(sum, weight, eps, out);
        }
    }

    /**
     * Threads of the v4 kernels' block for rows of h values: the fewest of 256, 512 and 1024 whose registers hold the row
     * (a model's hidden size at 256; the hyper-connection norm's 16384 at 512), 0 where they take no such row (h not a
     * multiple of 4, longer than {@value #V4_ROW_MAX}, or {@code -Dorbit.cuda.v4Norm=off}). By h alone: the block sets the
     * order of a row's sums, which then never depends on the rows beside it.
     */
    static int v4Block(int h) {
        if (!V4_NORM || h % 4 != 0 || h > V4_ROW_MAX) {
            return 0;
        }
        int block = V4_BLOCK;
        while ((long) V4_VALUES * block < h) {
            block *= 2;
        }
        return block;
    }

    /** A norm's weight: f32 or bf16, one value a column of the h-wide rows. */
    private static void checkNormWeight(String op, Tensor weight, int h) {
        if (weight.numel() != h || (weight.dtype() != DType.F32 && weight.dtype() != DType.BF16)) {
            throw new IllegalArgumentException(op + ": weight " + weight + " must be f32 or bf16 of hidden size " + h);
        }
    }

    private static boolean aligned16(Tensor t) {
        return CudaAllocator.address(t) % 16 == 0;
    }

    void softmax(Kernel kernel, Tensor x) {
        ctx.devContiguous("softmax x", x, DType.F32);
        int n = x.size(-1);
        int rows = CudaContext.rows(x);
        if (rows > 0 && n > 0) {
            ctx.launch(kernel, rows, rowBlock(n), x, n);
        }
    }

    /** Threads per row: 128 for short rows, up to 1024 for vocabulary-sized ones. */
    static int rowBlock(int n) {
        return n <= 1024 ? 128 : n <= 8192 ? 256 : 1024;
    }
}
