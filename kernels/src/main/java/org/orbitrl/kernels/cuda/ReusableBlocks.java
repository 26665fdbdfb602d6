package org.orbitrl.kernels.cuda;

import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.function.LongConsumer;

/**
 * Released device blocks kept on the host by their allocated size, for the next allocation of exactly that size
 * ({@link CudaAllocator}'s reuse on the host): at most {@code capacity} bytes in all, blocks of at most {@code largest}
 * bytes, the block released last taken first. Addresses only; the allocator orders the reuse on its stream and guards
 * this with its lock.
 */
final class ReusableBlocks {
    private final long capacity;
    private final long largest;
    private final HashMap<Long, ArrayDeque<Long>> bySize = new HashMap<>();
    private long bytes;
    private long count;

    ReusableBlocks(long capacity, long largest) {
        if (capacity < 0 || largest < 0) {
            throw new IllegalArgumentException("reusable blocks: capacity " + capacity + " and largest block " + largest
                    + " bytes must not be negative");
        }
        this.capacity = capacity;
        this.largest = largest;
    }

    /** Keeps the block at {@code address} of {@code size} allocated bytes where the caps allow; false (not kept) otherwise. */
    boolean keep(long address, long size) {
        if (size <= 0 || size > largest || bytes + size > capacity) {
            return false;
        }
        bySize.computeIfAbsent(size, k -> new ArrayDeque<>()).push(address);
        bytes += size;
        count++;
        return true;
    }

    /** A kept block of exactly {@code size} bytes, no longer kept; 0 where none is. */
    long take(long size) {
        ArrayDeque<Long> q = count == 0 ? null : bySize.get(size);
        if (q == null || q.isEmpty()) {
            return 0;
        }
        bytes -= size;
        count--;
        return q.pop();
    }

    /** Hands every kept block to {@code free} (address), keeping none afterwards. */
    void drain(LongConsumer free) {
        for (ArrayDeque<Long> q : bySize.values()) {
            for (long address : q) {
                free.accept(address);
            }
        }
        bySize.clear();
        bytes = 0;
        count = 0;
    }

    /** Bytes kept. */
    long bytes() {
        return bytes;
    }

    /** Blocks kept. */
    long count() {
        return count;
    }
}
