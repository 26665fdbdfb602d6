package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.model.StrictBackend;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A sequence's kept rows ({@link StateRows}) against a list of rows kept by the obvious rule (append, drop the oldest
 * beyond the limit, drop the pooled ones), over seeded random appends of 1-9 rows from random offsets of random values
 * made on the device ({@link StrictBackend}: device memory the host may touch only through the allocator) and on the
 * host, with forks taken at random that go on alone. Released device memory is poisoned in the tests, so a store that
 * handed out memory it then freed, or a fork that shared its parent's, reads NaN and fails the comparison. The device
 * store's promise is also counted: a window allocates once however many rows pass through it, a growing store a
 * number of times logarithmic in its rows.
 */
class StateRowsTest {
    private static final int WIDTH = 5;

    private StrictBackend strict;

    @BeforeEach
    void open() {
        strict = new StrictBackend();
    }

    @AfterEach
    void close() {
        strict.close();
    }

    @Test
    void aWindowKeepsItsLatestRowsOnTheDeviceAndOnTheHost() {
        for (int seed = 1; seed <= 4; seed++) {
            check(strict, StateRows.window(WIDTH, 7, MemoryCategory.KV_CACHE), 7, seed, false);
            check(new ScalarBackend(), StateRows.window(WIDTH, 7, MemoryCategory.KV_CACHE), 7, seed, false);
            // a window longer than its slack: the kept rows move to the front in pieces
            check(strict, StateRows.window(WIDTH, 40, MemoryCategory.KV_CACHE), 40, seed, false);
        }
    }

    @Test
    void aGrowingStoreKeepsEveryRowUntilItsOldestAreDropped() {
        for (int seed = 1; seed <= 4; seed++) {
            check(strict, StateRows.growing(WIDTH, 3, MemoryCategory.KV_CACHE), Integer.MAX_VALUE, seed, true);
            check(new ScalarBackend(), StateRows.growing(WIDTH, 3, MemoryCategory.KV_CACHE), Integer.MAX_VALUE, seed, true);
        }
    }

    @Test
    void aWindowAllocatesOnceAndAGrowingStoreLogarithmicallyOften() {
        Node row = deviceValues(new SplittableRandom(3), 1);
        StateRows window = StateRows.window(WIDTH, 127, MemoryCategory.KV_CACHE);
        StateRows entries = StateRows.growing(WIDTH, 16, MemoryCategory.KV_CACHE);
        window.append(strict, row, 0, 1);
        entries.append(strict, row, 0, 1);
        int before = strict.allocator().allocations();
        for (int i = 0; i < 4096; i++) {
            window.append(strict, row, 0, 1);
        }
        assertEquals(0, strict.allocator().allocations() - before, "allocations of a window over 4096 appends");
        before = strict.allocator().allocations();
        for (int i = 0; i < 4095; i++) {
            entries.append(strict, row, 0, 1);
        }
        assertEquals(8, strict.allocator().allocations() - before, "allocations of a store growing from 16 to 4096 rows");
        assertEquals(127, window.rows());
        assertEquals(4096, entries.rows());
        assertTrue(window.onDevice() && entries.onDevice());
        long kv = strict.allocator().liveBytes(MemoryCategory.KV_CACHE);
        assertEquals(4L * WIDTH * (127 + StateRows.WINDOW_SLACK + 4096), kv,
                "KV_CACHE bytes held: the window's 127 rows and its slack, the entries' 4096");
        assertEquals(kv, window.deviceBytes() + entries.deviceBytes());
        window.release(strict.allocator());
        entries.release(strict.allocator());
        assertEquals(0, strict.allocator().liveBytes(MemoryCategory.KV_CACHE), "KV_CACHE bytes after the release");
    }

    @Test
    void theAllocationDependsOnlyOnTheRowsHeld() {
        assertEquals(16, StateRows.capacityFor(16, 1));
        assertEquals(16, StateRows.capacityFor(16, 16));
        assertEquals(32, StateRows.capacityFor(16, 17));
        assertEquals(4096, StateRows.capacityFor(16, 2049));
        SplittableRandom r = new SplittableRandom(5);
        for (int trial = 0; trial < 20; trial++) {   // the same rows in different pieces: the same allocation
            StateRows a = StateRows.growing(WIDTH, 16, MemoryCategory.KV_CACHE);
            int total = 0;
            while (total < 300) {
                int n = 1 + r.nextInt(trial < 10 ? 3 : 150);
                a.append(strict, deviceValues(r, n), 0, n);
                total += n;
                assertEquals(4L * WIDTH * StateRows.capacityFor(16, total), a.deviceBytes(), "after " + total + " rows");
            }
            a.release(strict.allocator());
        }
    }

    @Test
    void rowsAppendedTogetherEqualRowsAppendedOneByOne() {
        SplittableRandom r = new SplittableRandom(9);
        int n = 6;
        StateRows[] together = new StateRows[n];
        StateRows[] alone = new StateRows[n];
        for (int i = 0; i < n; i++) {   // windows of several lengths: each reaches its compaction at another step
            together[i] = StateRows.window(WIDTH, 3 + 7 * i, MemoryCategory.KV_CACHE);
            alone[i] = StateRows.window(WIDTH, 3 + 7 * i, MemoryCategory.KV_CACHE);
        }
        for (int step = 0; step < 120; step++) {
            Node x = deviceValues(r, n + 2);
            int[] rows = r.ints(n, 0, n + 2).toArray();
            StateRows.appendRows(strict, together, x, rows);
            for (int i = 0; i < n; i++) {
                alone[i].append(strict, x, rows[i], 1);
            }
            for (int i = 0; i < n; i++) {
                assertEquals(alone[i].rows(), together[i].rows(), "store " + i + " at step " + step);
                assertArrayEquals(alone[i].hostValues(), together[i].hostValues(), "store " + i + " at step " + step);
            }
        }
    }

    /** Random appends (and drops where the store keeps everything) against the reference list, forks along the way. */
    private void check(Backend b, StateRows store, int keep, long seed, boolean drops) {
        SplittableRandom r = new SplittableRandom(seed);
        List<float[]> want = new ArrayList<>();
        List<StateRows> forks = new ArrayList<>();
        List<List<float[]>> forkWants = new ArrayList<>();
        for (int step = 0; step < 300; step++) {
            int op = r.nextInt(10);
            if (drops && op == 0 && !want.isEmpty()) {
                int n = r.nextInt(want.size() + 1);
                store.dropOldest(n);
                want.subList(0, n).clear();
            } else if (op == 1 && forks.size() < 3) {
                forks.add(store.copy(b.allocator()));
                forkWants.add(new ArrayList<>(want));
            } else {
                appendBoth(b, store, want, keep, r);
                for (int f = 0; f < forks.size(); f++) {   // a fork goes on with rows of its own
                    appendBoth(b, forks.get(f), forkWants.get(f), keep, r);
                }
            }
            compare(store, want, b, "seed " + seed + ", step " + step);
            for (int f = 0; f < forks.size(); f++) {
                compare(forks.get(f), forkWants.get(f), b, "seed " + seed + ", fork " + f + " at step " + step);
            }
        }
        Node v = store.value();
        if (v != null) {
            v.release(b.allocator());   // borrowed: releasing the value leaves the rows
            compare(store, want, b, "seed " + seed + ", after the value was released");
        }
        store.release(b.allocator());
        assertEquals(0, store.rows());
        assertNull(store.value());
        for (StateRows f : forks) {
            f.release(b.allocator());
        }
    }

    private void appendBoth(Backend b, StateRows store, List<float[]> want, int keep, SplittableRandom r) {
        int rows = 1 + r.nextInt(12);
        int count = 1 + r.nextInt(Math.min(rows, 9));
        int from = r.nextInt(rows - count + 1);
        Node x = b instanceof StrictBackend ? deviceValues(r, rows) : new Node(values(r, rows));
        store.append(b, x, from, count);
        float[] xv = x.v();
        for (int i = from; i < from + count; i++) {
            want.add(java.util.Arrays.copyOfRange(xv, i * WIDTH, (i + 1) * WIDTH));
        }
        while (want.size() > keep) {
            want.remove(0);
        }
    }

    private void compare(StateRows store, List<float[]> want, Backend b, String where) {
        assertEquals(want.size(), store.rows(), where + ": rows");
        Node v = store.value();
        if (want.isEmpty()) {
            assertNull(v, where);
            return;
        }
        assertSame(v, store.value(), where + ": the same value until the rows change");
        assertEquals(b instanceof StrictBackend, store.onDevice(), where + ": where the rows live");
        float[] got = b instanceof StrictBackend ? b.allocator().toFloats(v.placed(b.allocator(), want.size(), WIDTH)) : v.v();
        float[] flat = new float[want.size() * WIDTH];
        for (int i = 0; i < want.size(); i++) {
            System.arraycopy(want.get(i), 0, flat, i * WIDTH, WIDTH);
        }
        assertArrayEquals(flat, got, where);
        assertFalse(Float.isNaN(got[0]), where);
    }

    private static float[] values(SplittableRandom r, int rows) {
        float[] v = new float[rows * WIDTH];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) r.nextDouble(-1, 1);
        }
        return v;
    }

    private Node deviceValues(SplittableRandom r, int rows) {
        Tensor t = strict.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows, WIDTH);
        strict.allocator().copy(Tensor.of(values(r, rows), rows, WIDTH), t);
        return Node.onDevice(strict.allocator(), t);
    }
}
