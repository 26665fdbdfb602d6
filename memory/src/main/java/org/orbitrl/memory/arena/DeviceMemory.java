package org.orbitrl.memory.arena;

import java.lang.foreign.MemorySegment;

/**
 * Raw memory of one device, the seam a backend plugs its allocator into: host memory for the CPU
 * backend ({@link HostMemory}), {@code cudaMalloc}/{@code cudaFree} for the CUDA backend. The
 * {@link DeviceArena} above it does all accounting and enforcement; implementations only
 * allocate and free.
 */
public interface DeviceMemory {

    /**
     * Zero-filled memory of at least {@code bytes} bytes, aligned to {@link #alignment()}. For a
     * device the segment wraps the device address and is never dereferenced on the host.
     *
     * @throws OutOfMemoryError if the device has no room (the arena refuses before this happens
     *                          when the plan is right)
     */
    MemorySegment allocate(long bytes);

    /** Returns memory from {@link #allocate}; freeing anything else, or twice, throws. */
    void free(MemorySegment segment);

    /** Bytes this device can hold. */
    long capacity();

    /** Alignment of every allocation in bytes; the arena accounts sizes rounded up to it. */
    default long alignment() {
        return 256;
    }

    /** What this memory is, for messages ({@code cuda:0}, {@code host}). */
    String name();
}
