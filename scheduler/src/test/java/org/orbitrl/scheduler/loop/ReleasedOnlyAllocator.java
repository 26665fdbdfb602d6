package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.lang.foreign.MemorySegment;
import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Host memory counted as a device allocator that frees only on {@link #release} would hold it: the
 * live bytes of each category are the bytes allocated minus those of the whole per-step allocations
 * ({@link MemoryCategory#ACTIVATIONS}, {@link MemoryCategory#LOGITS}) released explicitly, never
 * credited when the collector finds a tensor unreachable within a step. A temporary the model drops
 * without releasing it counts until the next {@link #restart}, as a device allocation that only the
 * garbage collector would free. Allocation, release (poisoning) and transfers are the wrapped
 * allocator's.
 *
 * <p>With {@code sites} on, each per-step allocation remembers the code that made it, and every new
 * peak of {@link MemoryCategory#ACTIVATIONS} (by more than 1%) is taken apart after a full collection
 * into the bytes still reachable and the garbage, by allocation site: {@link #report} names the sites
 * whose temporaries were dropped without a release.
 */
final class ReleasedOnlyAllocator implements TensorAllocator {
    private static final MemoryCategory[] CATS = MemoryCategory.values();

    /** A per-step allocation not released yet; {@code segment} weakly held, shared by every view of the tensor. */
    private record Entry(WeakReference<MemorySegment> segment, MemoryCategory category, long bytes, String site) {
    }

    private final TensorAllocator inner;
    private final boolean sites;
    private final Map<Long, Entry> entries = new HashMap<>();   // by segment address
    private final List<Entry> dropped = new ArrayList<>();      // unreleased, collected, address taken by a later allocation
    private final long[] live = new long[CATS.length];
    private final long[] peak = new long[CATS.length];
    private final long[] best = new long[CATS.length];          // over every step since creation
    private final long[] atRestart = new long[CATS.length];     // live when the step began
    private final long[] left = new long[CATS.length];          // most left unreleased by a step
    private final long[] lastLeft = new long[CATS.length];      // left unreleased by the last step
    private final Map<String, Long> leftSites = new TreeMap<>(); // with sites: what the steps left, by allocation site
    private boolean measuring;                                  // false until the first restart: loading and warm-up
    private long lastAnalysed;
    private Map<String, long[]> peakSites = new TreeMap<>();    // site -> {reachable, garbage} bytes at the analysed peak

    private final boolean device;

    ReleasedOnlyAllocator(TensorAllocator inner, boolean sites) {
        this(inner, sites, false);
    }

    /**
     * With {@code device}, this memory says it is not the host's ({@link #hostMemory} false), so that model code
     * keeps in it what it keeps in a device's memory (DeepSeek V4's values); the tensors are still host memory,
     * which the CPU backend's operations read.
     */
    ReleasedOnlyAllocator(TensorAllocator inner, boolean sites, boolean device) {
        this.inner = inner;
        this.sites = sites;
        this.device = device;
    }

    private static boolean perStep(MemoryCategory c) {
        return c == MemoryCategory.ACTIVATIONS || c == MemoryCategory.LOGITS;
    }

    @Override
    public synchronized Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
        Tensor t = inner.allocate(category, dtype, shape);
        long bytes = t.byteSize();
        int c = category.ordinal();
        live[c] += bytes;
        if (perStep(category) && bytes > 0) {
            Entry before = entries.put(t.segment().address(), new Entry(new WeakReference<>(t.segment()), category, bytes,
                    sites ? site() : ""));
            if (before != null && sites) {
                dropped.add(before);
            }
        }
        if (live[c] > peak[c] && measuring) {
            peak[c] = live[c];
            best[c] = Math.max(best[c], peak[c]);
            if (sites && category == MemoryCategory.ACTIVATIONS && peak[c] > lastAnalysed * 1.01) {
                analyse();
                lastAnalysed = peak[c];
            }
        }
        return t;
    }

    /** Credits the bytes of {@code t} when it covers a live per-step allocation whole; then the wrapped allocator's release. */
    @Override
    public void release(Tensor t) {
        synchronized (this) {
            if (t.byteOffset() == 0) {
                Entry e = entries.get(t.segment().address());
                if (e != null && e.segment().refersTo(t.segment()) && t.byteSize() == e.bytes()) {
                    entries.remove(t.segment().address());
                    live[e.category().ordinal()] -= e.bytes();
                }
            }
        }
        inner.release(t);
    }

    @Override
    public boolean hostMemory() {
        return !device && inner.hostMemory();
    }

    @Override
    public Tensor upload(MemoryCategory category, Tensor host) {
        if (device) {   // a copy, as a device's upload makes
            Tensor t = allocate(category, host.dtype(), host.shape());
            inner.copy(host, t);
            return t;
        }
        return inner.hostMemory() ? host : inner.upload(category, host);
    }

    @Override
    public Tensor toHost(Tensor t) {
        if (device) {   // a copy, as a device's read makes
            Tensor h = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), t.dtype(), t.shape());
            h.copyFrom(t);
            return h;
        }
        return inner.toHost(t);
    }

    @Override
    public void copy(Tensor src, Tensor dst) {
        inner.copy(src, dst);
    }

    @Override
    public void zero(Tensor t) {
        inner.zero(t);
    }

    /**
     * A new step: after a full collection, the per-step allocations that are unreachable are
     * forgotten (what the collector would have freed between steps), and the peaks start again from
     * what is left.
     */
    synchronized void restart() {
        System.gc();
        entries.values().removeIf(e -> e.segment().refersTo(null));
        dropped.clear();
        long[] kept = new long[CATS.length];
        for (Entry e : entries.values()) {
            kept[e.category().ordinal()] += e.bytes();
        }
        for (MemoryCategory c : CATS) {
            if (perStep(c)) {
                live[c.ordinal()] = kept[c.ordinal()];
            }
        }
        System.arraycopy(live, 0, peak, 0, live.length);
        System.arraycopy(live, 0, atRestart, 0, live.length);
        startedAt = new java.util.HashSet<>(entries.keySet());
        for (int c = 0; c < best.length; c++) {
            best[c] = Math.max(best[c], peak[c]);
        }
        lastAnalysed = 0;
        measuring = true;
    }

    private java.util.Set<Long> startedAt = java.util.Set.of();

    /**
     * The step that began at the last {@link #restart} has ended: what it allocated of the per-step
     * categories and did not release counts towards {@link #leftUnreleased}.
     */
    synchronized void endStep() {
        for (MemoryCategory c : CATS) {
            if (perStep(c)) {
                lastLeft[c.ordinal()] = live[c.ordinal()] - atRestart[c.ordinal()];
                left[c.ordinal()] = Math.max(left[c.ordinal()], lastLeft[c.ordinal()]);
            }
        }
        if (sites) {
            for (Map.Entry<Long, Entry> e : entries.entrySet()) {
                if (!startedAt.contains(e.getKey())) {
                    leftSites.merge(e.getValue().category() + " " + e.getValue().site(), e.getValue().bytes(), Math::max);
                }
            }
        }
    }

    /** The most bytes of each per-step category that one step allocated and did not release (0 for the others). */
    synchronized Map<MemoryCategory, Long> leftUnreleased() {
        Map<MemoryCategory, Long> m = new EnumMap<>(MemoryCategory.class);
        for (MemoryCategory c : CATS) {
            m.put(c, left[c.ordinal()]);
        }
        return m;
    }

    /** Bytes of the per-step categories that the last step allocated and did not release. */
    synchronized long leftByLastStep() {
        long sum = 0;
        for (long b : lastLeft) {
            sum += b;
        }
        return sum;
    }

    /** The highest peak of any step since the first {@link #restart}, per category. */
    synchronized Map<MemoryCategory, Long> peaks() {
        Map<MemoryCategory, Long> m = new EnumMap<>(MemoryCategory.class);
        for (MemoryCategory c : CATS) {
            m.put(c, best[c.ordinal()]);
        }
        return m;
    }

    /** With {@code sites}: the allocation sites of the last analysed activation peak, largest garbage first. */
    synchronized String report() {
        List<Map.Entry<String, long[]>> rows = new ArrayList<>(peakSites.entrySet());
        rows.sort((x, y) -> Long.compare(y.getValue()[1] + y.getValue()[0] / 1000, x.getValue()[1] + x.getValue()[0] / 1000));
        StringBuilder sb = new StringBuilder(String.format("    %12s %12s  activations at the peak, by allocation site%n",
                "reachable", "garbage"));
        for (Map.Entry<String, long[]> r : rows) {
            sb.append(String.format("    %12d %12d  %s%n", r.getValue()[0], r.getValue()[1], r.getKey()));
        }
        for (Map.Entry<String, Long> r : leftSites.entrySet()) {
            sb.append(String.format("    %12d  left unreleased by a step: %s%n", r.getValue(), r.getKey()));
        }
        return sb.toString();
    }

    private void analyse() {
        System.gc();
        Map<String, long[]> m = new TreeMap<>();
        List<Entry> all = new ArrayList<>(entries.values());
        all.addAll(dropped);
        for (Entry e : all) {
            if (e.category() == MemoryCategory.ACTIVATIONS) {
                m.computeIfAbsent(e.site(), k -> new long[2])[e.segment().refersTo(null) ? 1 : 0] += e.bytes();
            }
        }
        peakSites = m;
    }

    /** The first frames of model or scheduler code that led to this allocation. */
    private static String site() {
        return StackWalker.getInstance().walk(frames -> frames
                .filter(f -> f.getClassName().startsWith("org.orbitrl.")
                        && !f.getClassName().startsWith("org.orbitrl.kernels.")
                        && !f.getClassName().equals(ReleasedOnlyAllocator.class.getName()))
                .limit(3)
                .map(f -> f.getClassName().substring(f.getClassName().lastIndexOf('.') + 1) + "." + f.getMethodName() + ":"
                        + f.getLineNumber())
                .reduce((x, y) -> x + " < " + y).orElse("?"));
    }
}
