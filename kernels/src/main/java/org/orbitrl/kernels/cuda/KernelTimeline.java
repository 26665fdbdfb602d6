package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.cuda.internal.KernelLibrary;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.BitSet;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The launches a traced build's kernels recorded ({@code -Dorbit.cuda.trace=on}; {@link CudaBackend#kernelTimeline}):
 * for each launch its kernel, its blocks, and the global timer (ns) at its blocks' starts, at the return of their wait
 * for the launch before ({@code pdl_enter}, which returns at once where the launch is not a programmatic dependent;
 * none for kernels without it) and at their ends, in the order of the launches' first block starts. A launch's <em>span</em> is how far it moves the last end of the work
 * before it: its last end less the previous launch's, so that a chain's spans add up to its time.
 */
public final class KernelTimeline {
    /**
     * One launch: its grid id, kernel, blocks, and the timer (ns) at its blocks' starts, waits' returns and ends; marks:
     * the median over its blocks of each point the kernel marks (ORBIT_TRACE_MARK), 0 where no block passed it.
     */
    public record Launch(long grid, String name, int blocks, int sms, long firstStart, long medianStart, long lastStart,
                         long medianWaited, long medianEnd, long lastEnd, long[] marks) {
        /** Whether its blocks passed a wait for the launch before ({@code pdl_enter}). */
        public boolean waited() {
            return medianWaited != 0;
        }
    }

    private final List<Launch> launches;
    private final long dropped;
    private final Map<Long, List<long[]>> records; // each launch's records by grid id, in block order

    private KernelTimeline(List<Launch> launches, long dropped, Map<Long, List<long[]>> records) {
        this.launches = List.copyOf(launches);
        this.dropped = dropped;
        this.records = records;
    }

    /**
     * The launches of {@code words} (records of {@link KernelLibrary#TRACE_WORDS} words: grid id, block | SM &lt;&lt; 40,
     * start, waited (0: no wait), end, block 0's name in 40 bytes, then the kernel's marks); {@code dropped}: records the
     * buffers had no room for. A launch whose block 0 left no record is named by its grid id.
     */
    public static KernelTimeline of(long[] words, long dropped) {
        int w = KernelLibrary.TRACE_WORDS;
        if (words.length % w != 0) {
            throw new IllegalArgumentException("trace records: " + words.length + " words is not a multiple of " + w);
        }
        Map<Long, List<long[]>> byGrid = new HashMap<>();
        Map<Long, String> names = new HashMap<>();
        for (int i = 0; i < words.length; i += w) {
            long[] r = Arrays.copyOfRange(words, i, i + w);
            byGrid.computeIfAbsent(r[0], k -> new ArrayList<>()).add(r);
            if ((r[1] & ((1L << 40) - 1)) == 0) {
                names.put(r[0], name(r));
            }
        }
        List<Launch> out = new ArrayList<>();
        for (Map.Entry<Long, List<long[]>> e : byGrid.entrySet()) {
            List<long[]> rs = e.getValue();
            rs.sort(Comparator.comparingLong(r -> r[1] & ((1L << 40) - 1)));
            int n = rs.size();
            long[] starts = new long[n];
            long[] ends = new long[n];
            long[] waits = new long[n];
            int waited = 0;
            BitSet sms = new BitSet();
            for (int i = 0; i < n; i++) {
                long[] r = rs.get(i);
                starts[i] = r[2];
                ends[i] = r[4];
                if (r[3] != 0) {
                    waits[waited++] = r[3];
                }
                sms.set((int) (r[1] >>> 40));
            }
            Arrays.sort(starts);
            Arrays.sort(ends);
            long[] w2 = Arrays.copyOf(waits, waited);
            Arrays.sort(w2);
            String name = names.getOrDefault(e.getKey(), "grid " + e.getKey());
            long[] marks = new long[KernelLibrary.TRACE_MARKS];
            for (int k = 0; k < marks.length; k++) {
                final int at = 10 + k;
                long[] ms = rs.stream().mapToLong(r -> r[at]).filter(v -> v != 0).sorted().toArray();
                marks[k] = ms.length == 0 ? 0 : ms[ms.length / 2];
            }
            out.add(new Launch(e.getKey(), name, n, sms.cardinality(), starts[0], starts[n / 2], starts[n - 1],
                    waited == 0 ? 0 : w2[waited / 2], ends[n / 2], ends[n - 1], marks));
        }
        out.sort(Comparator.comparingLong(Launch::firstStart).thenComparingLong(Launch::grid));
        return new KernelTimeline(out, dropped, byGrid);
    }

    private static String name(long[] r) {
        byte[] b = new byte[40];
        for (int i = 0; i < 40; i++) {
            b[i] = (byte) (r[5 + i / 8] >>> (8 * (i % 8)));
        }
        int len = 0;
        while (len < b.length && b[len] != 0) {
            len++;
        }
        return new String(b, 0, len, StandardCharsets.US_ASCII);
    }

    /** The launches, in the order of their first block starts. */
    public List<Launch> launches() {
        return launches;
    }

    /** Records the trace buffers had no room for (their launches are missing or short of blocks). */
    public long dropped() {
        return dropped;
    }

    /** From the first launch's first start to the last launch's last end, ns (0 without launches). */
    public long spanNanos() {
        if (launches.isEmpty()) {
            return 0;
        }
        long end = launches.stream().mapToLong(Launch::lastEnd).max().orElseThrow();
        return end - launches.getFirst().firstStart();
    }

    /**
     * Each launch of {@code [from, to)} against the launch before it, in µs: one line a launch with its first start and
     * its wait's median return after the previous launch's last end (negative: before it), its blocks' median end after
     * that return (or after their median start, without a wait), its tail (last end less median end) and its span.
     * Also as CSV by {@link #csv()}.
     */
    public String table(int from, int to) {
        StringBuilder sb = new StringBuilder();
        sb.append("| # | kernel | blocks | SMs | start | wait returns | body | tail | span |\n|---|---|---|---|---|---|---|---|---|\n");
        for (int i = Math.max(1, from); i < Math.min(to, launches.size()); i++) {
            Gaps g = gaps(i);
            Launch l = launches.get(i);
            sb.append(String.format(Locale.ROOT, "| %d | %s | %d | %d | %.2f | %s | %.2f | %.2f | %.2f |%n", i, l.name(), l.blocks(),
                    l.sms(), g.start, l.waited() ? String.format(Locale.ROOT, "%.2f", g.waited) : "", g.body, g.tail, g.span));
        }
        return sb.toString();
    }

    /**
     * The launches of {@code [from, to)} averaged by kernel (µs, as {@link #table}), in the order each kernel first
     * appears there, and the sum of the averaged spans below: over a run of identical layers in which each kernel runs once a
     * layer, what each launch adds to a layer.
     */
    public String byKernel(int from, int to) {
        return byKernel(from, to, null);
    }

    /**
     * {@link #byKernel(int, int)} with a column of each kernel's machine code in KiB ({@code codeBytes}: a kernel's {@code
     * .text} bytes, negative where unknown; null: no column).
     */
    public String byKernel(int from, int to, java.util.function.ToIntFunction<String> codeBytes) {
        Map<String, double[]> sums = new LinkedHashMap<>(); // count, blocks, start, wait, waitCount, body, tail, span
        Map<String, double[]> markSums = new LinkedHashMap<>(); // per mark: sum of µs after the wait's return (or start), count
        for (int i = Math.max(1, from); i < Math.min(to, launches.size()); i++) {
            Launch l = launches.get(i);
            Gaps g = gaps(i);
            double[] s = sums.computeIfAbsent(l.name(), k -> new double[8]);
            s[0]++;
            s[1] += l.blocks();
            s[2] += g.start;
            if (l.waited()) {
                s[3] += g.waited;
                s[4]++;
            }
            s[5] += g.body;
            s[6] += g.tail;
            s[7] += g.span;
            double base = l.waited() ? l.medianWaited() : l.medianStart();
            for (int k = 0; k < l.marks().length; k++) {
                if (l.marks()[k] != 0) {
                    double[] m = markSums.computeIfAbsent(l.name(), x -> new double[2 * KernelLibrary.TRACE_MARKS]);
                    m[2 * k] += (l.marks()[k] - base) / 1e3;
                    m[2 * k + 1]++;
                }
            }
        }
        StringBuilder sb = new StringBuilder();
        sb.append(codeBytes == null ? "| kernel | launches | blocks | start | wait returns | body | tail | span |\n|---|---|---|---|---|---|---|---|\n"
                : "| kernel | launches | blocks | start | wait returns | body | tail | span | code KiB |\n|---|---|---|---|---|---|---|---|---|\n");
        double total = 0;
        for (Map.Entry<String, double[]> e : sums.entrySet()) {
            double[] s = e.getValue();
            double n = s[0];
            total += s[7] / n;
            sb.append(String.format(Locale.ROOT, "| %s | %.0f | %.0f | %.2f | %s | %.2f | %.2f | %.2f |", e.getKey(), n, s[1] / n,
                    s[2] / n, s[4] == 0 ? "" : String.format(Locale.ROOT, "%.2f", s[3] / s[4]), s[5] / n, s[6] / n, s[7] / n));
            if (codeBytes != null) {
                int bytes = codeBytes.applyAsInt(e.getKey());
                sb.append(bytes < 0 ? " |" : String.format(Locale.ROOT, " %.1f |", bytes / 1024.0));
            }
            sb.append('\n');
        }
        sb.append(String.format(Locale.ROOT, "%nThe averaged spans of launches %d to %d add up to %.1f µs.%n", Math.max(1, from),
                Math.min(to, launches.size()), total));
        for (Map.Entry<String, double[]> e : markSums.entrySet()) {
            double[] m = e.getValue();
            sb.append(e.getKey()).append(": its marks after the wait's return (or the start), µs:");
            for (int k = 0; k < KernelLibrary.TRACE_MARKS; k++) {
                if (m[2 * k + 1] > 0) {
                    sb.append(String.format(Locale.ROOT, " %d %.2f", k, m[2 * k] / m[2 * k + 1]));
                }
            }
            sb.append('\n');
        }
        return sb.toString();
    }

    /**
     * Launch i's blocks one a line, in block order (i ≥ 1), in µs after launch i − 1's last end: each block's SM, start,
     * its wait's return (empty without one), its marks (empty where it did not pass them) and its end; then the block that
     * ended last. Where the median lines of {@link #byKernel} hide which block a launch waits for, this names it.
     */
    public String blocks(int i) {
        if (i < 1 || i >= launches.size()) {
            throw new IllegalArgumentException("launch " + i + ": expected 1 to " + (launches.size() - 1));
        }
        Launch l = launches.get(i);
        double prevEnd = launches.get(i - 1).lastEnd();
        StringBuilder sb = new StringBuilder(String.format(Locale.ROOT, "launch %d, %s, %d blocks (µs after launch %d's last end):%n",
                i, l.name(), l.blocks(), i - 1));
        sb.append("| block | SM | start | wait returns |");
        for (int k = 0; k < KernelLibrary.TRACE_MARKS; k++) {
            sb.append(" mark ").append(k).append(" |");
        }
        sb.append(" end |\n|---|---|---|---|");
        sb.append("---|".repeat(KernelLibrary.TRACE_MARKS)).append("---|\n");
        long lastBlock = -1;
        long lastEnd = Long.MIN_VALUE;
        for (long[] r : records.get(l.grid())) {
            long block = r[1] & ((1L << 40) - 1);
            sb.append(String.format(Locale.ROOT, "| %d | %d | %.2f | %s |", block, r[1] >>> 40, (r[2] - prevEnd) / 1e3,
                    r[3] == 0 ? "" : String.format(Locale.ROOT, "%.2f", (r[3] - prevEnd) / 1e3)));
            for (int k = 0; k < KernelLibrary.TRACE_MARKS; k++) {
                long m = r[10 + k];
                sb.append(m == 0 ? " |" : String.format(Locale.ROOT, " %.2f |", (m - prevEnd) / 1e3));
            }
            sb.append(String.format(Locale.ROOT, " %.2f |%n", (r[4] - prevEnd) / 1e3));
            if (r[4] > lastEnd) {
                lastEnd = r[4];
                lastBlock = block;
            }
        }
        sb.append(String.format(Locale.ROOT, "The last to end: block %d, at %.2f.%n", lastBlock, (lastEnd - prevEnd) / 1e3));
        return sb.toString();
    }

    /** Every launch as a CSV row (ns of the global timer, relative to the first launch's first start). */
    public String csv() {
        StringBuilder sb = new StringBuilder("index,grid,kernel,blocks,sms,first_start,median_start,last_start,median_waited,median_end,last_end\n");
        long t0 = launches.isEmpty() ? 0 : launches.getFirst().firstStart();
        for (int i = 0; i < launches.size(); i++) {
            Launch l = launches.get(i);
            sb.append(i).append(',').append(l.grid()).append(',').append(l.name()).append(',').append(l.blocks()).append(',')
                    .append(l.sms()).append(',').append(l.firstStart() - t0).append(',').append(l.medianStart() - t0).append(',')
                    .append(l.lastStart() - t0).append(',').append(l.waited() ? l.medianWaited() - t0 : -1).append(',')
                    .append(l.medianEnd() - t0).append(',').append(l.lastEnd() - t0).append('\n');
        }
        return sb.toString();
    }

    private record Gaps(double start, double waited, double body, double tail, double span) {
    }

    /** Launch i (i ≥ 1) against launch i − 1's last end, in µs. */
    private Gaps gaps(int i) {
        Launch p = launches.get(i - 1);
        Launch l = launches.get(i);
        double prevEnd = p.lastEnd();
        double from = l.waited() ? l.medianWaited() : l.medianStart();
        return new Gaps((l.firstStart() - prevEnd) / 1e3, l.waited() ? (l.medianWaited() - prevEnd) / 1e3 : 0,
                (l.medianEnd() - from) / 1e3, (l.lastEnd() - l.medianEnd()) / 1e3, (l.lastEnd() - prevEnd) / 1e3);
    }
}
