package org.orbitrl.kernels.cuda;

import org.bytedeco.cuda.cudart.CUstream_st;
import org.orbitrl.kernels.cuda.internal.Launcher;

import static org.bytedeco.cuda.global.cudart.*;

/**
 * A CUDA stream: work issued on it runs in order, asynchronously to the host. Created
 * non-blocking, so it never synchronises implicitly with the legacy default stream.
 */
public final class CudaStream implements AutoCloseable {
    private final CUstream_st handle;
    private boolean closed;

    /** A new stream on the current device, of the default priority. */
    public CudaStream() {
        this(false);
    }

    /**
     * A new stream on the current device; {@code highest}: of the device's highest priority, so that
     * its blocks are scheduled ahead of those of default-priority streams waiting for free SMs (the
     * latency-bound decode steps of rollout beside training's large products).
     */
    public CudaStream(boolean highest) {
        CUstream_st s = new CUstream_st();
        if (highest) {
            int[] least = new int[1];
            int[] greatest = new int[1];
            CudaCheck.check(cudaDeviceGetStreamPriorityRange(least, greatest), "cudaDeviceGetStreamPriorityRange");
            CudaCheck.check(cudaStreamCreateWithPriority(s, cudaStreamNonBlocking, greatest[0]), "cudaStreamCreateWithPriority",
                    "priority " + greatest[0]);
        } else {
            CudaCheck.check(cudaStreamCreateWithFlags(s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
        }
        this.handle = s;
    }

    /** The native handle, for JavaCPP calls. */
    public CUstream_st handle() {
        return handle;
    }

    /** Blocks until all work issued so far has finished; throws if any of it failed. */
    public void synchronize() {
        Launcher.settleDeferred();
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
