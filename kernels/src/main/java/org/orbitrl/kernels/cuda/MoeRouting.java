package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;

/**
 * A mixture-of-experts layer's (token, expert) pairs grouped by expert, on the device: filled by
 * {@link CudaMoe#moeRoute} (a device-side counting sort, no host round trip, so it can be
 * captured in a CUDA graph) and read by the grouped products. Sized once for the largest pair
 * count it will hold and reused step after step.
 *
 * <p>Layout of the one i32 buffer: {@code offsets [E + 1]} (expert e's pairs are
 * {@code order[offsets[e] .. offsets[e + 1])}), {@code active [1 + E]} (the count of experts with a
 * pair, then those experts ascending), {@code order [maxPairs]} (pair indices grouped by expert,
 * ascending within an expert). A pair index p is {@code token * topk + slot} of the ids tensor.
 */
public final class MoeRouting implements AutoCloseable {
    private final CudaAllocator allocator;
    private final Tensor buffer; // i32 [(E + 1) + (1 + E) + maxPairs]
    private final int numExperts;
    private final int maxPairs;
    private int pairs = -1;
    private int topk;
    private boolean closed;

    MoeRouting(CudaAllocator allocator, int numExperts, int maxPairs) {
        this(allocator, MemoryCategory.ACTIVATIONS, numExperts, maxPairs);
    }

    /** A routing whose buffer is accounted as {@code category} (one kept for the backend's life: {@link MemoryCategory#RUNTIME_RESERVE}). */
    MoeRouting(CudaAllocator allocator, MemoryCategory category, int numExperts, int maxPairs) {
        if (numExperts <= 0 || maxPairs <= 0) {
            throw new IllegalArgumentException("MoeRouting: experts " + numExperts + " and pairs " + maxPairs + " must be positive");
        }
        this.allocator = allocator;
        this.numExperts = numExperts;
        this.maxPairs = maxPairs;
        this.buffer = allocator.allocate(category, DType.I32, 2L * numExperts + 2 + maxPairs);
    }

    public int numExperts() {
        return numExperts;
    }

    public int maxPairs() {
        return maxPairs;
    }

    /** Pairs of the last {@link CudaMoe#moeRoute} (tokens · topk); throws before the first. */
    public int pairs() {
        requireRouted();
        return pairs;
    }

    /** Experts per token of the last route. */
    public int topk() {
        requireRouted();
        return topk;
    }

    /** i32 [E + 1]. */
    public Tensor offsets() {
        return buffer.slice(0, 0, numExperts + 1);
    }

    /** i32 [1 + E]. */
    public Tensor active() {
        return buffer.slice(0, numExperts + 1, 2L * numExperts + 2);
    }

    /** i32 [pairs] of the last route. */
    public Tensor order() {
        return buffer.slice(0, 2L * numExperts + 2, 2L * numExperts + 2 + pairs());
    }

    void routed(int pairs, int topk) {
        if (pairs > maxPairs) {
            throw new IllegalArgumentException("MoeRouting: " + pairs + " pairs exceed the " + maxPairs + " it was sized for");
        }
        this.pairs = pairs;
        this.topk = topk;
    }

    private void requireRouted() {
        if (closed) {
            throw new IllegalStateException("MoeRouting is closed");
        }
        if (pairs < 0) {
            throw new IllegalStateException("MoeRouting has not been filled by CudaBackend.moeRoute yet");
        }
    }

    /** Frees the device buffer. */
    @Override
    public void close() {
        if (!closed) {
            closed = true;
            allocator.free(buffer);
        }
    }
}
