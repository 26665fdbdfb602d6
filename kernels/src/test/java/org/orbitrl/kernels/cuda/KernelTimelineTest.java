package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.cuda.internal.KernelLibrary;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link KernelTimeline} over records laid out as common.cuh's traced kernels write them, built here from launches whose
 * times are known: blocks grouped by grid id whatever the order of the records, block 0's name, the medians and the
 * spans against the launch before. No GPU needed.
 */
class KernelTimelineTest {
    private static final int W = KernelLibrary.TRACE_WORDS;

    /** A launch's records: block b starts at start + b·step, waits (if waited) until waited + b, ends at end + b·step. */
    private static List<long[]> launch(long grid, String name, int blocks, long start, long step, long waited, long end) {
        List<long[]> rs = new ArrayList<>();
        byte[] n = name.getBytes(StandardCharsets.US_ASCII);
        for (int b = 0; b < blocks; b++) {
            long[] r = new long[W];
            r[0] = grid;
            r[1] = b | ((long) (b % 7) << 40);
            r[2] = start + b * step;
            r[3] = waited == 0 ? 0 : waited + b;
            r[4] = end + b * step;
            if (b == 0) {
                for (int i = 0; i < Math.min(40, n.length); i++) {
                    r[5 + i / 8] |= (long) (n[i] & 0xff) << (8 * (i % 8));
                }
            }
            rs.add(r);
        }
        return rs;
    }

    private static long[] words(List<long[]> records) {
        long[] w = new long[records.size() * W];
        for (int i = 0; i < records.size(); i++) {
            System.arraycopy(records.get(i), 0, w, i * W, W);
        }
        return w;
    }

    @Test
    void launchesAreTheirBlocksGroupedAndOrderedByFirstStart() {
        List<long[]> rs = new ArrayList<>();
        // grid ids out of time order, records shuffled: the order comes from the starts
        rs.addAll(launch(900, "qkv_product", 5, 10_000, 100, 0, 20_000));          // ends 20_000 .. 20_400
        rs.addAll(launch(17, "attention_with_a_rather_long_kernel_name_cut_at_forty", 3, 21_000, 10, 0, 30_000)); // .. 30_020
        rs.addAll(launch(400, "o_proj", 4, 25_000, 0, 31_000, 36_000));            // waits 31_000.., ends 36_000
        Collections.shuffle(rs, new java.util.Random(7));
        KernelTimeline t = KernelTimeline.of(words(rs), 3);
        assertEquals(3, t.dropped());
        List<KernelTimeline.Launch> ls = t.launches();
        assertEquals(List.of("qkv_product", "attention_with_a_rather_long_kernel_name", "o_proj"),
                ls.stream().map(KernelTimeline.Launch::name).toList(), "in time order, names cut at 40 bytes");
        KernelTimeline.Launch q = ls.get(0);
        assertEquals(900, q.grid());
        assertEquals(5, q.blocks());
        assertEquals(5, q.sms());
        assertEquals(10_000, q.firstStart());
        assertEquals(10_200, q.medianStart());
        assertEquals(10_400, q.lastStart());
        assertEquals(20_200, q.medianEnd());
        assertEquals(20_400, q.lastEnd());
        assertTrue(!q.waited() && ls.get(2).waited());
        assertEquals(31_002, ls.get(2).medianWaited(), "the median of 31 000 .. 31 003");
        assertEquals(36_000 - 10_000, t.spanNanos());
        // o_proj against the attention's last end (30 020): start −5.02 µs, wait returns +0.982, body 36 000 − 31 002,
        // tail 0, span 36 000 − 30 020
        String table = t.table(0, 3);
        assertTrue(table.contains("| 2 | o_proj | 4 | 4 | -5.02 | 0.98 | 5.00 | 0.00 | 5.98 |"), table);
        assertTrue(table.contains("| 1 | attention_with_a_rather_long_kernel_name | 3 | 3 | 0.60 |  | 9.00 | 0.01 | 9.62 |"), table);
        String csv = t.csv();
        assertTrue(csv.startsWith("index,grid,kernel,blocks,sms,first_start,") && csv.contains("\n2,400,o_proj,4,4,15000,15000,15000,21002,26000,26000\n"),
                csv);
    }

    @Test
    void byKernelAveragesEachKernelsLaunchesAndSumsTheSpans() {
        // four identical "layers" of two launches whose times vary by a seeded jitter: the averages are the closed forms
        SplittableRandom r = new SplittableRandom(11);
        List<long[]> rs = new ArrayList<>();
        long t;
        double spanA = 0;
        double spanB = 0;
        long prevEnd;
        long grid = 1;
        rs.addAll(launch(grid++, "head", 1, 0, 0, 0, 1_000));
        prevEnd = 1_000;
        t = 1_000;
        for (int layer = 0; layer < 4; layer++) {
            long aStart = t + 500 + r.nextInt(100);
            long aEnd = aStart + 4_000 + r.nextInt(500);
            rs.addAll(launch(grid++, "a", 2, aStart, 0, 0, aEnd));
            spanA += aEnd - prevEnd;
            long bStart = aEnd - 2_000;
            long bWait = aEnd + 700;
            long bEnd = bWait + 3_000 + r.nextInt(300);
            List<long[]> b = launch(grid++, "b", 3, bStart, 0, bWait - 1, bEnd);
            for (long[] rec : b) {
                rec[10 + 2] = rec[3] + 300; // its mark 2, 0.3 µs after each block's wait
            }
            rs.addAll(b);
            spanB += bEnd - aEnd;
            prevEnd = bEnd;
            t = bEnd;
        }
        KernelTimeline tl = KernelTimeline.of(words(rs), 0);
        assertEquals(9, tl.launches().size());
        String s = tl.byKernel(1, 9);
        assertTrue(s.contains(String.format(java.util.Locale.ROOT, "| a | 4 | 2 | ")), s);
        assertTrue(s.contains(String.format(java.util.Locale.ROOT, "| b | 4 | 3 | -2.00 | 0.70 | ")), s);
        assertTrue(s.contains(String.format(java.util.Locale.ROOT, "| %.2f |%n| b |", spanA / 4 / 1e3)), s);
        assertTrue(s.contains(String.format(java.util.Locale.ROOT, "The averaged spans of launches 1 to 9 add up to %.1f µs.", (spanA + spanB) / 4 / 1e3)), s);
        assertTrue(s.contains("\nb: its marks after the wait's return (or the start), µs: 2 0.30\n"), s);
        assertTrue(!s.contains("\na: its marks"), "a marks nothing: " + s);
        // with the kernels' machine code: a column in KiB, empty where unknown; the same rows before it
        String code = tl.byKernel(1, 9, name -> name.equals("a") ? 23296 : -1);
        assertTrue(code.startsWith("| kernel | launches | blocks | start | wait returns | body | tail | span | code KiB |\n"), code);
        assertTrue(code.contains(String.format(java.util.Locale.ROOT, "| %.2f | 22.8 |%n| b |", spanA / 4 / 1e3)), code);
        assertTrue(code.contains(String.format(java.util.Locale.ROOT, "| b | 4 | 3 | -2.00 | 0.70 | ")) && code.contains(" | |\n\nThe averaged"),
                code);
    }

    @Test
    void blocksListsALaunchsBlocksInBlockOrderAgainstTheLaunchBefore() {
        List<long[]> rs = new ArrayList<>();
        rs.addAll(launch(5, "qkv", 2, 1_000, 0, 0, 10_000));                      // ends 10 000
        List<long[]> att = launch(6, "attention", 4, 10_500, 250, 11_000, 14_000); // block b: start 10 500 + 250 b, end 14 000 + 250 b
        att.get(1)[10 + 3] = 12_345;                                              // block 1's mark 3
        att.get(2)[4] = 19_000;                                                   // block 2 ends last
        Collections.reverse(att);                                                 // records in any order
        rs.addAll(att);
        KernelTimeline t = KernelTimeline.of(words(rs), 0);
        String s = t.blocks(1);
        assertTrue(s.startsWith("launch 1, attention, 4 blocks (µs after launch 0's last end):\n| block | SM | start | wait returns | mark 0 |"), s);
        String[] lines = s.split("\n");
        assertEquals(1 + 2 + 4 + 1, lines.length, s);
        // block 1 on SM 1: start 0.75, wait 11 001 → 1.00, mark 3 at 2.345 → 2.35, end 14 250 → 4.25
        assertEquals("| 1 | 1 | 0.75 | 1.00 | | | | 2.35 | | | 4.25 |", lines[4], s);
        assertEquals("| 0 | 0 | 0.50 | 1.00 | | | | | | | 4.00 |", lines[3], s);
        assertEquals("The last to end: block 2, at 9.00.", lines[7], s);
        assertThrows(IllegalArgumentException.class, () -> t.blocks(0));
        assertThrows(IllegalArgumentException.class, () -> t.blocks(2));
    }

    @Test
    void recordsOfTheWrongLengthAreRefused() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KernelTimeline.of(new long[W + 3], 0));
        assertTrue(e.getMessage().contains("not a multiple of " + W), e.getMessage());
    }
}
