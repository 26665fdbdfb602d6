package org.orbitrl.kernels.cuda;

import org.bytedeco.cuda.global.cublas;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.cuda.global.nvrtc;
import org.bytedeco.javacpp.BytePointer;

import java.util.Arrays;

/**
 * The check every native CUDA call goes through: a non-zero status becomes a
 * {@link CudaException} naming the operation, the sizes it was given and the library's error
 * string. One method per library, because each numbers its errors its own way.
 */
public final class CudaCheck {
    private CudaCheck() {
    }

    /** CUDA runtime API ({@code cudaError_t}). */
    public static void check(int err, String op, Object... sizes) {
        if (err != 0) {
            throw failure(op, err, runtimeError(err), sizes);
        }
    }

    /** CUDA driver API ({@code CUresult}). */
    public static void driver(int err, String op, Object... sizes) {
        if (err != 0) {
            throw failure(op, err, driverError(err), sizes);
        }
    }

    /** NVRTC ({@code nvrtcResult}). */
    public static void nvrtc(int err, String op, Object... sizes) {
        if (err != 0) {
            throw failure(op, err, string(nvrtc.nvrtcGetErrorString(err)), sizes);
        }
    }

    /** cuBLAS and cuBLASLt ({@code cublasStatus_t}). */
    public static void cublas(int err, String op, Object... sizes) {
        if (err != 0) {
            throw failure(op, err, string(cublas.cublasGetStatusString(err)), sizes);
        }
    }

    static CudaException failure(String op, int err, String what, Object[] sizes) {
        StringBuilder sb = new StringBuilder(op).append(" failed: ").append(what).append(" (code ").append(err).append(')');
        if (sizes != null && sizes.length > 0) {
            sb.append("; arguments: ");
            for (int i = 0; i < sizes.length; i++) {
                if (i > 0) {
                    sb.append(", ");
                }
                Object s = sizes[i];
                sb.append(s instanceof long[] a ? Arrays.toString(a) : s instanceof int[] a ? Arrays.toString(a) : String.valueOf(s));
            }
        }
        return new CudaException(op, err, sb.toString());
    }

    static String runtimeError(int err) {
        return string(cudart.cudaGetErrorName(err)) + ": " + string(cudart.cudaGetErrorString(err));
    }

    static String driverError(int err) {
        BytePointer name = new BytePointer(); // const char** out-parameters
        BytePointer text = new BytePointer();
        int a = cudart.cuGetErrorName(err, name);
        int b = cudart.cuGetErrorString(err, text);
        return (a == 0 ? string(name) : "CUresult " + err) + ": " + (b == 0 ? string(text) : "unknown error");
    }

    private static String string(BytePointer p) {
        return p == null || p.isNull() ? "(no message)" : p.getString();
    }
}
