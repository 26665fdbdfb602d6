package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.lang.foreign.Arena;
import java.lang.ref.Cleaner;
import java.util.EnumMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * Host allocations with live and peak bytes by category. Each tensor's memory belongs to an
 * automatic arena and is freed by the garbage collector once unreachable; a cleaner subtracts it
 * from the live count then, so "live" lags frees by up to one collection.
 *
 * <p>{@link #reachable()} makes an allocator whose peaks are exact instead: the most bytes of each
 * category that the program could still reach at once, whatever the collector's timing (see
 * {@link ReachablePeaks}). It costs a full collection whenever a new peak is possible; for tests.
 */
public final class AccountingAllocator implements TensorAllocator {
    private static final Cleaner CLEANER = Cleaner.create();
    private static final MemoryCategory[] CATS = MemoryCategory.values();

    private final AtomicLongArray live = new AtomicLongArray(CATS.length);
    private final AtomicLongArray peak = new AtomicLongArray(CATS.length);
    private final ReachablePeaks exact;   // null: peaks of the cleaner-lagged live count

    public AccountingAllocator() {
        this.exact = null;
    }

    private AccountingAllocator(ReachablePeaks exact) {
        this.exact = exact;
    }

    /** An allocator whose {@link #peak} is the exact peak of reachable bytes per category (slow: for tests). */
    public static AccountingAllocator reachable() {
        return new AccountingAllocator(new ReachablePeaks(CATS.length));
    }

    @Override
    public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
        Tensor t = Tensor.allocate(Arena.ofAuto(), dtype, shape);
        if (exact != null) {
            exact.allocated(t.segment().scope(), category.ordinal(), t.byteSize());
        }
        long bytes = t.byteSize();
        int c = category.ordinal();
        long now = live.addAndGet(c, bytes);
        peak.accumulateAndGet(c, now, Math::max);
        CLEANER.register(t.segment(), () -> live.addAndGet(c, -bytes));
        return t;
    }

    public Map<MemoryCategory, Long> live() {
        Map<MemoryCategory, Long> m = new EnumMap<>(MemoryCategory.class);
        for (MemoryCategory c : CATS) {
            m.put(c, live.get(c.ordinal()));
        }
        return m;
    }

    /** Live bytes of each category that holds any, by lower-case category name (as the metrics file names them). */
    public java.util.SortedMap<String, Long> liveByName() {
        java.util.SortedMap<String, Long> m = new java.util.TreeMap<>();
        for (MemoryCategory c : CATS) {
            long b = live.get(c.ordinal());
            if (b > 0) {
                m.put(c.name().toLowerCase(), b);
            }
        }
        return m;
    }

    /**
     * Peak bytes by category since creation (or {@link #resetPeaks}): of the live count, or for
     * {@link #reachable()} the exact peak of reachable bytes.
     */
    public Map<MemoryCategory, Long> peak() {
        Map<MemoryCategory, Long> m = new EnumMap<>(MemoryCategory.class);
        for (MemoryCategory c : CATS) {
            m.put(c, exact != null ? exact.peak(c.ordinal()) : peak.get(c.ordinal()));
        }
        return m;
    }

    /** Starts the peaks again from what is live (for {@link #reachable()}: reachable) now. */
    public void resetPeaks() {
        if (exact != null) {
            exact.reset();
        }
        for (MemoryCategory c : CATS) {
            peak.set(c.ordinal(), live.get(c.ordinal()));
        }
    }
}
