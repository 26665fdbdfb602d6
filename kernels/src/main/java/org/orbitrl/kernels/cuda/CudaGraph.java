package org.orbitrl.kernels.cuda;

import org.bytedeco.cuda.cudart.CUgraphExec_st;
import org.bytedeco.cuda.cudart.CUgraph_st;
import org.orbitrl.kernels.cuda.internal.Launcher;

import static org.bytedeco.cuda.global.cudart.*;

/**
 * A captured and instantiated CUDA graph: the kernels a piece of code issues on a stream,
 * recorded once and replayed with one launch (about 0.75 µs a kernel from Java instead of ~4 µs).
 * The captured code must issue only stream work (no allocation, no synchronisation, no host
 * copies); replays read and write the same device addresses it used.
 */
public final class CudaGraph implements AutoCloseable {
    private final CUgraph_st graph;
    private final CUgraphExec_st exec;
    private boolean closed;

    private CudaGraph(CUgraph_st graph, CUgraphExec_st exec) {
        this.graph = graph;
        this.exec = exec;
    }

    /** Records what {@code work} issues on {@code stream} (thread-local capture mode). */
    public static CudaGraph capture(CudaStream stream, Runnable work) {
        CudaCheck.check(cudaStreamBeginCapture(stream.handle(), cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
        CUgraph_st g = new CUgraph_st();
        try {
            work.run();
            Launcher.settleDeferred(); // what a launch left to the next ones, captured with it
        } catch (RuntimeException | Error e) {
            int err = cudaStreamEndCapture(stream.handle(), g);   // the capture ends whatever happened in it
            if (err != cudaSuccess) {
                cudaGetLastError();
                e.addSuppressed(new CudaException("cudaStreamEndCapture", err, "ending a failed capture: error " + err));
            } else if (!g.isNull()) {
                cudaGraphDestroy(g);
            }
            throw e;
        }
        CudaCheck.check(cudaStreamEndCapture(stream.handle(), g), "cudaStreamEndCapture");
        CUgraphExec_st e = new CUgraphExec_st();
        CudaCheck.check(cudaGraphInstantiate(e, g, 0L), "cudaGraphInstantiate");
        return new CudaGraph(g, e);
    }

    /** The captured graph (its nodes and edges), for inspection. */
    CUgraph_st graph() {
        return graph;
    }

    /** Replays the graph on {@code stream}. */
    public void launch(CudaStream stream) {
        CudaCheck.check(cudaGraphLaunch(exec, stream.handle()), "cudaGraphLaunch");
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            CudaCheck.check(cudaGraphExecDestroy(exec), "cudaGraphExecDestroy");
            CudaCheck.check(cudaGraphDestroy(graph), "cudaGraphDestroy");
        }
    }
}
