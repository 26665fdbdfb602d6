package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.MemoryCategory;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Where the bytes of each category's peak were allocated: the live allocations grouped by the call
 * site that made them (the first stack frame outside the allocator's own classes), remembered at
 * every new peak of the category. {@link CudaAllocator} keeps one under {@code -D}{@value #PROPERTY}{@code =true};
 * off, it keeps none and pays nothing. The bookkeeping is plain host arithmetic (no device), so it is
 * tested on its own.
 *
 * <p>Cost when on: a stack walk per allocation and, at each new peak, a copy of the category's
 * per-site totals (tens of sites). Not thread-safe: the allocator calls it under its own lock.
 */
public final class PeakSites {
    /** The system property that turns the bookkeeping on in {@link CudaAllocator}. */
    public static final String PROPERTY = "orbit.cuda.peakSites";

    /**
     * Bytes live at a category's peak that one call site allocated.
     *
     * @param site        {@code Class.method:line} of the first frame outside the allocator
     * @param bytes       allocated bytes (as the allocator rounds them) of the site's live allocations
     * @param allocations how many allocations those are
     */
    public record Site(String site, long bytes, int allocations) {
    }

    private record Live(MemoryCategory category, String site, long bytes) {
    }

    private static final StackWalker WALKER = StackWalker.getInstance();

    private final Set<String> skipped;
    private final Map<Long, Live> blocks = new HashMap<>();
    private final Map<MemoryCategory, Map<String, long[]>> live = new EnumMap<>(MemoryCategory.class); // site -> {bytes, count}
    private final Map<MemoryCategory, long[]> totals = new EnumMap<>(MemoryCategory.class);             // {live, peak}
    private final Map<MemoryCategory, List<Site>> atPeak = new EnumMap<>(MemoryCategory.class);

    /** {@code skipped}: fully qualified names of the classes whose frames are not call sites (the allocator's own). */
    public PeakSites(Set<String> skipped) {
        this.skipped = Set.copyOf(skipped);
        for (MemoryCategory c : MemoryCategory.values()) {
            live.put(c, new HashMap<>());
            totals.put(c, new long[2]);
            atPeak.put(c, List.of());
        }
    }

    /** True when {@code -D}{@value #PROPERTY}{@code =true}. */
    public static boolean enabled() {
        return Boolean.getBoolean(PROPERTY);
    }

    /** {@code Class.method:line} of the caller's first frame whose class is not skipped (nested classes by their outer name too). */
    public String callSite() {
        return WALKER.walk(frames -> frames
                .filter(f -> !skipped.contains(outer(f.getClassName())))
                .findFirst()
                .map(f -> simple(f.getClassName()) + "." + f.getMethodName() + ":" + f.getLineNumber())
                .orElse("?"));
    }

    private static String outer(String className) {
        int i = className.indexOf('$');
        return i < 0 ? className : className.substring(0, i);
    }

    private static String simple(String className) {
        return className.substring(className.lastIndexOf('.') + 1);
    }

    /** An allocation of {@code bytes} at {@code address} made by {@code site}; remembers the sites if the category reaches a new peak. */
    public void allocated(long address, MemoryCategory category, long bytes, String site) {
        Live old = blocks.put(address, new Live(category, site, bytes));
        if (old != null) {   // an address the allocator reuses without a release seen here: drop the stale entry
            remove(old);
        }
        long[] s = live.get(category).computeIfAbsent(site, k -> new long[2]);
        s[0] += bytes;
        s[1]++;
        long[] t = totals.get(category);
        t[0] += bytes;
        if (t[0] > t[1]) {
            t[1] = t[0];
            atPeak.put(category, snapshot(category));
        }
    }

    /** The allocation at {@code address} is freed (unknown addresses are ignored). */
    public void released(long address) {
        Live b = blocks.remove(address);
        if (b != null) {
            remove(b);
        }
    }

    private void remove(Live b) {
        Map<String, long[]> m = live.get(b.category());
        long[] s = m.get(b.site());
        s[0] -= b.bytes();
        if (--s[1] == 0) {
            m.remove(b.site());
        }
        totals.get(b.category())[0] -= b.bytes();
    }

    private List<Site> snapshot(MemoryCategory c) {
        List<Site> out = new ArrayList<>(live.get(c).size());
        for (Map.Entry<String, long[]> e : live.get(c).entrySet()) {
            out.add(new Site(e.getKey(), e.getValue()[0], (int) e.getValue()[1]));
        }
        out.sort(Comparator.comparingLong(Site::bytes).reversed().thenComparing(Site::site));
        return out;
    }

    /** The sites of {@code category}'s highest peak so far, most bytes first; their bytes sum to {@link #peakBytes}. */
    public List<Site> atPeak(MemoryCategory category) {
        return atPeak.get(category);
    }

    /** The category's highest live bytes seen here. */
    public long peakBytes(MemoryCategory category) {
        return totals.get(category)[1];
    }

    /** The category's live bytes seen here. */
    public long liveBytes(MemoryCategory category) {
        return totals.get(category)[0];
    }

    /** The sites of the category's live allocations now, most bytes first. */
    public List<Site> liveSites(MemoryCategory category) {
        return snapshot(category);
    }
}
