package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.cuda.cublas.cublasContext;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.javacpp.FloatPointer;
import org.orbitrl.kernels.cuda.CudaCheck;

import static org.bytedeco.cuda.global.cublas.*;
import static org.bytedeco.cuda.global.cudart.CUDA_R_16BF;
import static org.bytedeco.cuda.global.cudart.CUDA_R_32F;

/**
 * A cuBLAS handle bound to one stream, and the one product Orbit needs from it, in row-major
 * terms: {@code y[M, N] = x[M, K] · w[N, K]ᵀ}, f32 output, f32 accumulation.
 *
 * <p>cuBLAS is column-major. A row-major [N, K] matrix is a column-major [K, N] one, so
 * {@code yᵀ[N, M] = w · xᵀ} is {@code gemm(op(A)=T, op(B)=N, m=N, n=M, k=K, A=w (lda=K), B=x (ldb=K),
 * C=y (ldc=N))}.
 *
 * <p>Math mode is {@code CUBLAS_DEFAULT_MATH}: f32 × f32 products stay in full f32 (no TF32).
 */
public final class Cublas implements AutoCloseable {
    private final cublasContext handle;
    private final FloatPointer one = new FloatPointer(1f);   // alpha, host memory, lives as long as the handle
    private final FloatPointer zero = new FloatPointer(0f);  // beta
    private final FloatPointer alphaBeta = new FloatPointer(2); // {alpha, beta} of the general product, host memory
    private boolean closed;

    /** Recommended cuBLAS workspace on Hopper (less makes it fall back to slower kernels). */
    public static final long WORKSPACE_BYTES = 32L << 20;

    /**
     * @param workspace device address of {@code workspaceBytes} of device memory owned by the caller
     *                  for as long as this handle lives, or 0 for cuBLAS's default
     */
    public Cublas(CUstream_st stream, long workspace, long workspaceBytes) {
        cublasContext h = new cublasContext();
        CudaCheck.cublas(cublasCreate_v2(h), "cublasCreate");
        this.handle = h;
        CudaCheck.cublas(cublasSetStream_v2(h, stream), "cublasSetStream");
        CudaCheck.cublas(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
        if (workspace != 0) {
            CudaCheck.cublas(cublasSetWorkspace_v2(h, new DevicePointer(workspace), workspaceBytes), "cublasSetWorkspace",
                    workspaceBytes + " bytes");
        }
    }

    /**
     * {@code y[M, N] = x[M, K] · w[N, K]ᵀ}. {@code bf16} selects bf16 x and w (f32 accumulate),
     * otherwise both are f32. Addresses are device pointers.
     */
    public void gemm(long x, long w, long y, int m, int n, int k, boolean bf16) {
        if (Launcher.omitted("cublas")) {
            return;
        }
        int type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
        int err = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, one,
                new DevicePointer(w), type, k, new DevicePointer(x), type, k, zero,
                new DevicePointer(y), CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        CudaCheck.cublas(err, "cublasGemmEx", "x [" + m + ", " + k + "]", "w [" + n + ", " + k + "]",
                bf16 ? "bf16 x bf16 -> f32" : "f32 x f32 -> f32");
    }

    /** {@code y[M, N] += x[M, K] · w[N, K]ᵀ}, bf16 x and w, f32 y and accumulation (β = 1). */
    public void gemmAccumulate(long x, long w, long y, int m, int n, int k) {
        if (Launcher.omitted("cublas")) {
            return;
        }
        int err = cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, one,
                new DevicePointer(w), CUDA_R_16BF, k, new DevicePointer(x), CUDA_R_16BF, k, one,
                new DevicePointer(y), CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        CudaCheck.cublas(err, "cublasGemmEx (accumulate)", "x [" + m + ", " + k + "]", "w [" + n + ", " + k + "]", "bf16 x bf16 + f32 -> f32");
    }

    /**
     * {@code y[M, N] = a[M, K] · b[K, N]} (no transpose; row-major), f32 output and accumulation;
     * {@code bf16} selects bf16 a and b. Column-major this is {@code yᵀ = bᵀ · aᵀ}:
     * {@code gemm(N, N, m=N, n=M, k=K, A=b (lda=N), B=a (ldb=K), C=y (ldc=N))}.
     */
    public void gemmNN(long a, long b, long y, int m, int n, int k, boolean bf16) {
        if (Launcher.omitted("cublas")) {
            return;
        }
        int type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
        int err = cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, one,
                new DevicePointer(b), type, n, new DevicePointer(a), type, k, zero,
                new DevicePointer(y), CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        CudaCheck.cublas(err, "cublasGemmEx (no transpose)", "a [" + m + ", " + k + "]", "b [" + k + ", " + n + "]",
                bf16 ? "bf16 x bf16 -> f32" : "f32 x f32 -> f32");
    }

    /**
     * The general column-major product {@code C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C},
     * as cuBLAS defines it (op = transpose when asked; lda, ldb, ldc the column-major leading
     * dimensions). {@code bf16} selects bf16 A and B; C is always f32, accumulation f32.
     */
    public void gemm(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long b, int ldb,
                     float beta, long c, int ldc, boolean bf16) {
        if (Launcher.omitted("cublas")) {
            return;
        }
        int type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
        alphaBeta.put(0, alpha).put(1, beta);
        int err = cublasGemmEx(handle, transA ? CUBLAS_OP_T : CUBLAS_OP_N, transB ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k,
                alphaBeta, new DevicePointer(a), type, lda, new DevicePointer(b), type, ldb, alphaBeta.getPointer(1),
                new DevicePointer(c), CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        CudaCheck.cublas(err, "cublasGemmEx", (transA ? "T" : "N") + (transB ? "T" : "N"), "m " + m, "n " + n, "k " + k,
                "lda " + lda, "ldb " + ldb, "ldc " + ldc, bf16 ? "bf16 x bf16 -> f32" : "f32 x f32 -> f32");
    }

    /**
     * {@code batch} products at fixed strides, each as {@link #gemm(boolean, boolean, int, int, int, float, long,
     * int, long, int, float, long, int, boolean)} (column-major; strides in elements between consecutive
     * A, B and C), in one call; {@code bf16} selects bf16 A and B, C is always f32, accumulation f32.
     */
    public void gemmStridedBatched(boolean transA, boolean transB, int m, int n, int k, float alpha, long a, int lda, long strideA,
                                   long b, int ldb, long strideB, float beta, long c, int ldc, long strideC, int batch,
                                   boolean bf16) {
        if (Launcher.omitted("cublas")) {
            return;
        }
        int type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
        alphaBeta.put(0, alpha).put(1, beta);
        int err = cublasGemmStridedBatchedEx(handle, transA ? CUBLAS_OP_T : CUBLAS_OP_N, transB ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
                k, alphaBeta, new DevicePointer(a), type, lda, strideA, new DevicePointer(b), type, ldb, strideB,
                alphaBeta.getPointer(1), new DevicePointer(c), CUDA_R_32F, ldc, strideC, batch, CUBLAS_COMPUTE_32F,
                CUBLAS_GEMM_DEFAULT);
        CudaCheck.cublas(err, "cublasGemmStridedBatchedEx", (transA ? "T" : "N") + (transB ? "T" : "N"), "m " + m, "n " + n,
                "k " + k, "lda " + lda, "ldb " + ldb, "ldc " + ldc, "batch " + batch,
                bf16 ? "bf16 x bf16 -> f32" : "f32 x f32 -> f32");
    }

    /**
     * {@code batch} column-major products of one size through pointer arrays ({@code cublasGemmBatchedEx}):
     * {@code C_i[m, n] = alpha · op(A_i)[m, k] · B_i[k, n] + beta · C_i}, A and B bf16, C f32, f32 accumulation. The three
     * arrays of {@code batch} device pointers each are device memory at {@code aArray}, {@code bArray}
     * and {@code cArray}.
     */
    public void gemmBatchedBf16(boolean transA, int m, int n, int k, float alpha, long aArray, int lda, long bArray, int ldb,
                                float beta, long cArray, int ldc, int batch) {
        if (Launcher.omitted("cublas")) {
            return;
        }
        alphaBeta.put(0, alpha).put(1, beta);
        int err = cublasGemmBatchedEx(handle, transA ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, alphaBeta,
                new PointerArray(aArray), CUDA_R_16BF, lda, new PointerArray(bArray), CUDA_R_16BF, ldb, alphaBeta.getPointer(1),
                new PointerArray(cArray), CUDA_R_32F, ldc, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        CudaCheck.cublas(err, "cublasGemmBatchedEx", (transA ? "T" : "N") + "N", "m " + m, "n " + n, "k " + k, "lda " + lda,
                "ldb " + ldb, "ldc " + ldc, "batch " + batch, "bf16 x bf16 -> f32");
    }

    /** The handle, for the other cuBLAS entry points of this package ({@link GroupedGemm}). */
    cublasContext handle() {
        return handle;
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            CudaCheck.cublas(cublasDestroy_v2(handle), "cublasDestroy");
            one.deallocate();
            zero.deallocate();
            alphaBeta.deallocate();
        }
    }
}
