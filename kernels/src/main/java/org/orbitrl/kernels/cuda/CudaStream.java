package org.orbitrl.kernels.cuda;

import org.bytedeco.cuda.cudart.CUstream_st;

import static org.bytedeco.cuda.global.cudart.*;

/**
 * A CUDA stream: work issued on it runs in order, asynchronously to the host. Created
 * non-blocking, so it never synchronises implicitly with the legacy default stream.
 */
public final class CudaStream implements AutoCloseable {
    private final CUstream_st handle;
    private boolean closed;

    /** A new stream on the current device. */
    public CudaStream() {
        CUstream_st s = new CUstream_st();
        CudaCheck.check(cudaStreamCreateWithFlags(s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
        this.handle = s;
    }

    /** The native handle, for JavaCPP calls. */
    public CUstream_st handle() {
        return handle;
    }

    /** Blocks until all work issued so far has finished; throws if any of it failed. */
    public void synchronize() {
        CudaCheck.check(cudaStreamSynchronize(handle), "cudaStreamSynchronize");
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            CudaCheck.check(cudaStreamDestroy(handle), "cudaStreamDestroy");
        }
    }
}
