package org.orbitrl.kernels.cuda;

/**
 * A CUDA, driver, NVRTC or cuBLAS call returned an error. The message names the operation,
 * the sizes involved and the library's own error string.
 */
public final class CudaException extends RuntimeException {
    private final String operation;
    private final int code;

    public CudaException(String operation, int code, String message) {
        super(message);
        this.operation = operation;
        this.code = code;
    }

    /** The failed operation, for example {@code "cudaMalloc"}. */
    public String operation() {
        return operation;
    }

    /** The library's numeric error code. */
    public int code() {
        return code;
    }
}
