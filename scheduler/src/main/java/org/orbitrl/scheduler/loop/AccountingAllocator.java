package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.lang.foreign.Arena;
import java.lang.ref.Cleaner;
import java.util.EnumMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * Host allocations with live and peak bytes by category. Each tensor's memory belongs to an
 * automatic arena and is freed by the garbage collector once unreachable. A tensor of a per-step
 * category leaves the live count when it is {@link #release released}, as a device's would (its
 * memory is still the collector's to free); any other leaves it when a cleaner sees it collected,
 * so for those "live" lags frees by up to one collection.
 *
 * <p>{@link #reachable()} makes an allocator whose peaks are exact instead: the most bytes of each
 * category that the program could still reach at once, whatever the collector's timing (see
 * {@link ReachablePeaks}). It costs a full collection whenever a new peak is possible; for tests.
 */
public final class AccountingAllocator implements TensorAllocator {
    private static final Cleaner CLEANER = Cleaner.create();
    private static final MemoryCategory[] CATS = MemoryCategory.values();

    private final AtomicLongArray live = new AtomicLongArray(CATS.length);
    /** The counted allocations, by address, until released (per-step categories), freed or collected. */
    private final ConcurrentHashMap<Long, Counted> counted = new ConcurrentHashMap<>();
    private final AtomicLongArray peak = new AtomicLongArray(CATS.length);
    private final ReachablePeaks exact;
    private static final double[] SLACKS = {1.0, 0.1, 0.01};
    /** Runs of the step {@link #peakOfRepeatedStep} takes. */
    public static final int PEAK_PASSES = SLACKS.length;
    /** The true peak is at most this fraction above what {@link #peakOfRepeatedStep} reports. */
    public static final double PEAK_PRECISION = 0.01;   // null: peaks of the cleaner-lagged live count

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
        Counted one = new Counted(c, bytes);
        long address = t.segment().address();
        if (bytes > 0) {
            counted.put(address, one);   // replaces a collected allocation's entry whose cleaner has not run yet
        }
        CLEANER.register(t.segment(), () -> {
            one.uncount(live);
            counted.remove(address, one);
        });
        return t;
    }

    /** Takes a whole per-step tensor of this allocator out of the live count now (see {@link TensorAllocator#release}). */
    @Override
    public void release(Tensor t) {
        TensorAllocator.super.release(t);
        uncount(t, true);
    }

    /** Takes a whole tensor of this allocator of any category out of the live count now (see {@link TensorAllocator#free}). */
    @Override
    public void free(Tensor t) {
        TensorAllocator.super.free(t);
        uncount(t, false);
    }

    private void uncount(Tensor t, boolean perStepOnly) {
        if (TensorAllocator.isWhole(t)) {
            long address = t.segment().address();
            Counted one = counted.get(address);
            if (one != null && one.bytes == t.byteSize() && (!perStepOnly || perStepCategory(CATS[one.category]))) {
                one.uncount(live);
                counted.remove(address, one);
            }
        }
    }

    private static boolean perStepCategory(MemoryCategory c) {
        return c == MemoryCategory.ACTIVATIONS || c == MemoryCategory.LOGITS;
    }

    /** One allocation's bytes in the live count, taken out once: by a release or by its collection, whichever is first. */
    private static final class Counted {
        final int category;
        final long bytes;
        final AtomicBoolean in = new AtomicBoolean(true);

        Counted(int category, long bytes) {
            this.category = category;
            this.bytes = bytes;
        }

        void uncount(AtomicLongArray live) {
            if (in.compareAndSet(true, false)) {
                live.addAndGet(category, -bytes);
            }
        }
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

    /**
     * For {@link #reachable()}: until {@link #resetPeaks}, allocations are followed but take no
     * peak, so a warm-up (lazily allocated buffers, optimizer state) runs at full speed.
     */
    public void pausePeaks() {
        if (exact != null) {
            exact.disarm();
        }
    }

    /**
     * For {@link #reachable()}: the peak of reachable bytes per category of a step that
     * {@code step} runs {@link #PEAK_PASSES} times with the same allocations (the same inputs through
     * the same code), to within {@link #PEAK_PRECISION} below the true peak. Each run counts only the
     * moments that could pass the previous run's peak, by a slack that shrinks from run to run, so
     * that few collections are needed.
     */
    public Map<MemoryCategory, Long> peakOfRepeatedStep(Runnable step) {
        if (exact == null) {
            throw new IllegalStateException("peaks of reachable bytes need an allocator made by AccountingAllocator.reachable()");
        }
        long[] best = new long[CATS.length];
        for (double slack : SLACKS) {
            exact.restart(slack, best);
            step.run();
            long[] p = exact.peaks();
            for (int c = 0; c < best.length; c++) {
                best[c] = Math.max(best[c], p[c]);
            }
        }
        Map<MemoryCategory, Long> m = new EnumMap<>(MemoryCategory.class);
        for (MemoryCategory c : CATS) {
            m.put(c, best[c.ordinal()]);
        }
        return m;
    }

    /** For {@link #reachable()}: the full collections it has run to count reachable bytes; else 0. */
    public int collections() {
        return exact == null ? 0 : exact.collections();
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
