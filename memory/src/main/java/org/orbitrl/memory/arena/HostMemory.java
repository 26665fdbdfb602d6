package org.orbitrl.memory.arena;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Off-heap host memory standing in for a device on the CPU backend.
 *
 * <p>Lifetimes: each allocation gets its own {@link Arena#ofShared() shared arena}, because the
 * FFM arena is the unit of freeing and the {@link DeviceArena} frees allocations one by one (when
 * the job scope that owns them closes), exactly as the CUDA backend calls {@code cudaFree}. The
 * lifetime the code reasons about is therefore the job scope's: everything a job allocates lives
 * until its scope closes, then is freed at once; a tensor used after that fails with
 * {@link IllegalStateException} instead of reading freed memory. The arena is shared (not
 * confined) because the thread that closes a job's scope is not the one that allocated. Memory
 * never freed is freed by {@link #close}.
 */
public final class HostMemory implements DeviceMemory, AutoCloseable {
    private final long capacity;
    private final Map<Long, Arena> arenas = new ConcurrentHashMap<>();

    /** Host memory that refuses to hold more than {@code capacity} bytes at once. */
    public HostMemory(long capacity) {
        if (capacity <= 0) {
            throw new IllegalArgumentException("capacity must be positive, got " + capacity);
        }
        this.capacity = capacity;
    }

    @Override
    public MemorySegment allocate(long bytes) {
        if (bytes <= 0) {
            throw new IllegalArgumentException("allocation of " + bytes + " bytes");
        }
        Arena a = Arena.ofShared();
        MemorySegment s = a.allocate(bytes, alignment());     // zero-filled by the FFM contract
        arenas.put(s.address(), a);
        return s;
    }

    @Override
    public void free(MemorySegment segment) {
        Arena a = arenas.remove(segment.address());
        if (a == null) {
            throw new IllegalArgumentException("free of host memory at 0x" + Long.toHexString(segment.address())
                    + " that this memory did not allocate, or that was freed already");
        }
        a.close();
    }

    @Override
    public long capacity() {
        return capacity;
    }

    @Override
    public String name() {
        return "host";
    }

    /** Allocations not freed yet. */
    public int outstanding() {
        return arenas.size();
    }

    /** Frees every allocation still outstanding. */
    @Override
    public void close() {
        for (Long addr : arenas.keySet()) {
            Arena a = arenas.remove(addr);
            if (a != null) {
                a.close();
            }
        }
    }
}
