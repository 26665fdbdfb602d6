package org.orbitrl.kernels.cuda;

import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;

/**
 * The memory plan of one captured step: offsets into one device allocation, handed out in the
 * order the step allocates and taken back when it releases (reused by a later allocation of the
 * same size, which the stream orders after every use of the released one). The plan is a pure
 * function of the step's allocate/release sequence, so a measuring run (capacity unbounded)
 * finds the high-water mark the captured run (capacity = that mark) then fits into exactly.
 */
final class CaptureArena {
    private final long capacity;
    private final Map<Long, ArrayDeque<Long>> free = new HashMap<>(); // bytes -> offsets released, last first
    private long top;
    private long highWater;

    /** A plan of at most {@code capacity} bytes ({@link Long#MAX_VALUE}: measuring). */
    CaptureArena(long capacity) {
        this.capacity = capacity;
    }

    /** The offset of a new block of {@code bytes} (a multiple of the alignment), or -1 when it does not fit. */
    long take(long bytes) {
        ArrayDeque<Long> q = free.get(bytes);
        if (q != null && !q.isEmpty()) {
            return q.pop();
        }
        if (top + bytes > capacity) {
            return -1;
        }
        long off = top;
        top += bytes;
        highWater = Math.max(highWater, top);
        return off;
    }

    /** Takes back the block of {@code bytes} at {@code offset} for reuse by a later {@link #take}. */
    void give(long offset, long bytes) {
        free.computeIfAbsent(bytes, b -> new ArrayDeque<>()).push(offset);
    }

    /** Bytes the plan needs: the end of the highest block handed out. */
    long highWater() {
        return highWater;
    }

    long capacity() {
        return capacity;
    }
}
