package org.orbitrl.scheduler.loop;

import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.List;

/**
 * Exact peaks of reachable bytes per category, independent of when the collector runs. Each
 * allocation is followed through a weak reference to the scope of its memory (every view of a
 * tensor shares it): the allocation is reachable exactly while that reference is not cleared.
 *
 * <p>The reachable bytes of a category can only grow at an allocation, and never exceed the bytes
 * found reachable at the last collection plus those allocated since. Only when that bound passes
 * the category's peak can the allocation set a new peak: then a full collection ({@link System#gc})
 * clears the references of everything unreachable, and the allocations still reachable are counted
 * exactly. Collections are thus rare once the peaks are reached.
 */
final class ReachablePeaks {
    private record Entry(WeakReference<Object> scope, int category, long bytes) {
    }

    private final List<Entry> entries = new ArrayList<>();
    private final long[] bound;   // per category: reachable at the last count plus allocated since
    private final long[] peak;    // per category, exact
    private final long[] floor;   // per category: no collection for bounds at or below it
    private boolean armed = true;  // false: allocations are followed but set no peak
    private double slack;          // a collection only when the bound passes the peak by this fraction
    private int collections;

    ReachablePeaks(int categories) {
        this.bound = new long[categories];
        this.peak = new long[categories];
        this.floor = new long[categories];
    }

    synchronized void allocated(Object scope, int category, long bytes) {
        entries.add(new Entry(new WeakReference<>(scope), category, bytes));
        bound[category] += bytes;
        if (armed && bound[category] > (long) (Math.max(floor[category], peak[category]) * (1 + slack))) {
            count();
        }
    }

    synchronized long peak(int category) {
        return peak[category];
    }

    /** Peaks start again from the bytes reachable now; exact (no slack, no floor). */
    synchronized void reset() {
        restart(0, new long[peak.length]);
    }

    /**
     * Peaks start again from the bytes reachable now. A moment is counted only when the bound passes
     * (1 + {@code slack}) times the larger of the category's peak and its {@code floors} entry, so a
     * peak above the floor is found to within that factor below the true one.
     */
    synchronized void restart(double slack, long[] floors) {
        java.util.Arrays.fill(peak, 0);
        System.arraycopy(floors, 0, floor, 0, floor.length);
        this.slack = slack;
        armed = true;
        count();
    }

    synchronized long[] peaks() {
        return peak.clone();
    }

    /** Until the next {@link #reset}, allocations are followed (to be counted later) but no peak is taken: a cheap warm-up. */
    synchronized void disarm() {
        armed = false;
    }

    /** Full collections run so far. */
    synchronized int collections() {
        return collections;
    }

    /** Collects, drops the entries of unreachable allocations, and counts the rest exactly. */
    private void count() {
        System.gc();
        collections++;
        java.util.Arrays.fill(bound, 0);
        int kept = 0;
        for (Entry e : entries) {
            if (!e.scope().refersTo(null)) {
                entries.set(kept++, e);
                bound[e.category()] += e.bytes();
            }
        }
        entries.subList(kept, entries.size()).clear();
        for (int c = 0; c < bound.length; c++) {
            peak[c] = Math.max(peak[c], bound[c]);
        }
    }
}
