package org.orbitrl.kernels.cuda;

import org.bytedeco.cuda.cudart.CUevent_st;

import static org.bytedeco.cuda.global.cudart.*;

/** A CUDA event: a point in a stream, for ordering between streams and for device-side timing. */
public final class CudaEvent implements AutoCloseable {
    private final CUevent_st handle;
    private boolean closed;

    public CudaEvent() {
        CUevent_st e = new CUevent_st();
        CudaCheck.check(cudaEventCreate(e), "cudaEventCreate");
        this.handle = e;
    }

    public CUevent_st handle() {
        return handle;
    }

    /** Marks the current end of {@code stream}'s work. */
    public CudaEvent record(CudaStream stream) {
        CudaCheck.check(cudaEventRecord(handle, stream.handle()), "cudaEventRecord");
        return this;
    }

    /** Blocks until the recorded work has finished. */
    public void synchronize() {
        CudaCheck.check(cudaEventSynchronize(handle), "cudaEventSynchronize");
    }

    /** Makes future work on {@code stream} wait for this event (no host block). */
    public void waitOn(CudaStream stream) {
        CudaCheck.check(cudaStreamWaitEvent(stream.handle(), handle, 0), "cudaStreamWaitEvent");
    }

    /** Milliseconds of device time from {@code start} to this event; both must have completed. */
    public float elapsedMillisSince(CudaEvent start) {
        float[] ms = new float[1];
        CudaCheck.check(cudaEventElapsedTime(ms, start.handle, handle), "cudaEventElapsedTime");
        return ms[0];
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            CudaCheck.check(cudaEventDestroy(handle), "cudaEventDestroy");
        }
    }
}
