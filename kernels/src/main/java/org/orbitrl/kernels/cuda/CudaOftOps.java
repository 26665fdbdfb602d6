package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.OftOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

import java.util.Arrays;

/**
 * OFT's rotation blocks on the device ({@code oft.cu}): the algorithms of the host's {@link OftOps}
 * in double precision, one thread block per stored block. The b×b work matrices of a block sit in
 * shared memory when they fit in 48 KiB (b ≤ 34 for every op, up to b ≤ 77 for the exact forward), else in
 * a reused device workspace. The rotation of activations ({@link #rotate}) is one strided-batched
 * cuBLAS f32 product over the blocks (each block's slice of every row times its b×b block); in
 * exact mode one thread per output, whose sum over the b inputs does not depend on the row count.
 * Each op is one launch; nothing is copied to the host.
 */
final class CudaOftOps {
    private static final int THREADS = 256;          // OFT_THREADS in oft.cu
    private static final int SHARED_LIMIT = 48 * 1024;

    private final CudaContext ctx;
    private final Kernel rotation;
    private final Kernel backward;
    private final Kernel project;
    private final Kernel rotate;

    private final boolean exact;

    CudaOftOps(CudaContext ctx, boolean exact) {
        this.ctx = ctx;
        this.exact = exact;
        this.rotation = ctx.kernel("oft", "oft_rotation");
        this.backward = ctx.kernel("oft", "oft_rotation_backward");
        this.project = ctx.kernel("oft", "oft_project");
        this.rotate = ctx.kernel("oft", "oft_rotate");
    }

    void rotation(Tensor param, int neumannTerms, Tensor rotationT) {
        int b = check("oftRotation", param, rotationT, neumannTerms);
        launch(rotation, param.size(0), b, neumannTerms == 0 ? 1 : 3, param, b, neumannTerms, rotationT);
    }

    void rotationBackward(Tensor param, Tensor dRotation, int neumannTerms, Tensor grad) {
        int b = check("oftRotationBackward", param, dRotation, neumannTerms);
        ctx.devContiguous("oftRotationBackward grad", grad, DType.F32);
        if (!Arrays.equals(grad.shape(), param.shape())) {
            throw new IllegalArgumentException("oftRotationBackward: grad " + grad + " must have param's shape " + param);
        }
        launch(backward, param.size(0), b, neumannTerms == 0 ? 2 : 5, param, dRotation, b, neumannTerms, grad);
    }

    void project(Tensor param, double radius) {
        ctx.devContiguous("oftProject param", param, DType.F32);
        if (param.rank() != 2) {
            throw new IllegalArgumentException("oftProject: param must be [stored, n], got " + param);
        }
        if (param.size(0) > 0 && param.size(1) > 0) {
            ctx.launch(project, param.size(0), THREADS, param, param.size(1), Double.doubleToRawLongBits(radius));
        }
    }

    void rotate(Tensor x, Tensor rotationT, boolean transposed, Tensor y) {
        ctx.dev("oftRotate x", x);
        ctx.dev("oftRotate y", y);
        ctx.devContiguous("oftRotate rotationT", rotationT, DType.F32);
        int b = OftOps.checkRotate(x, rotationT, y);
        long total = x.numel();
        if (total == 0) {
            return;
        }
        int in = x.size(-1);
        int stored = rotationT.size(0);
        if (exact) {
            ctx.launch(rotate, ctx.gridFor(total, THREADS), THREADS, x, rotationT, y, total, in, b, stored, transposed ? 1 : 0);
            return;
        }
        // Row-major y_i [M, b] = x_i [M, b] · A_iᵀ (A_i = rotationT[i] [b, b]; transposed: · A_i), x_i and y_i the
        // column slices [i·b, (i+1)·b) of rows of width in. Column-major: y_iᵀ = op(A_i) · x_iᵀ with A_i read as
        // its own transpose, so op is T for the plain rotation and N for the transposed one; a shared block
        // has batch stride 0.
        int rows = Math.toIntExact(total / in);
        ctx.cublas.gemmStridedBatched(!transposed, false, b, rows, b, 1f, CudaAllocator.address(rotationT), b,
                stored == 1 ? 0 : (long) b * b, CudaAllocator.address(x), in, b, 0f, CudaAllocator.address(y), in, b, in / b, false);
    }

    /** One block per stored block, with {@code mats} b×b double matrices and b doubles of work each. */
    private void launch(Kernel k, int stored, int b, int mats, Object... args) {
        if (stored == 0) {
            return;
        }
        long perBlock = (long) mats * b * b + b;   // doubles
        boolean shared = perBlock * 8 <= SHARED_LIMIT;
        Tensor work = shared ? null : ctx.scratch(CudaContext.Scratch.OFT_WORK, DType.I64, perBlock * stored);
        Object[] all = Arrays.copyOf(args, args.length + 2);
        all[args.length] = work;
        all[args.length + 1] = shared ? 1 : 0;
        ctx.launchShared(k, stored, THREADS, shared ? (int) (perBlock * 8) : 0, all);
    }

    private int check(String op, Tensor param, Tensor rotation, int neumannTerms) {
        ctx.devContiguous(op + " param", param, DType.F32);
        ctx.devContiguous(op + " rotation", rotation, DType.F32);
        if (param.rank() != 2) {
            throw new IllegalArgumentException(op + ": param must be [stored, b(b−1)/2], got " + param);
        }
        int b = OftOps.blockSize(param.size(1));
        if (rotation.rank() != 3 || rotation.size(0) != param.size(0) || rotation.size(1) != b || rotation.size(2) != b) {
            throw new IllegalArgumentException(op + ": rotation must be [" + param.size(0) + ", " + b + ", " + b
                    + "] for param " + param + ", got " + rotation);
        }
        if (neumannTerms < 0) {
            throw new IllegalArgumentException(op + ": neumannTerms must be 0 (exact Cayley map) or positive, got " + neumannTerms);
        }
        return b;
    }
}
