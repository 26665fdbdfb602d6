package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.CapturedStep;
import org.orbitrl.kernels.Tensor;

/**
 * A step captured by {@link CudaBackend#captureStep}: its CUDA graph, the arena its allocations came
 * from, and its output (a tensor of the arena, rewritten by every replay).
 */
final class CudaCapturedStep implements CapturedStep {
    private final CudaBackend backend;
    private final CudaGraph graph;
    private final CudaAllocator.CaptureMemory arena;
    private final Tensor output;
    private boolean closed;

    CudaCapturedStep(CudaBackend backend, CudaGraph graph, CudaAllocator.CaptureMemory arena, Tensor output) {
        this.backend = backend;
        this.graph = graph;
        this.arena = arena;
        this.output = output;
    }

    /** One graph launch on the backend's stream; the output is ready for the stream's next work. */
    @Override
    public Tensor replay() {
        if (closed) {
            throw new IllegalStateException("captured step already closed");
        }
        backend.device().bind();
        graph.launch(backend.stream());
        return output;
    }

    @Override
    public long arenaBytes() {
        return arena.bytes;
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            backend.device().bind();
            backend.stream().synchronize();   // a replay still running reads the arena
            graph.close();
            backend.allocator().freeArena(arena);
        }
    }
}
