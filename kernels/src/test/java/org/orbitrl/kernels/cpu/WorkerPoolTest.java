package org.orbitrl.kernels.cpu;

import org.junit.jupiter.api.Test;

import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicIntegerArray;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The backend's thread pool: every task once, named daemon threads, an idle pool parked, errors surfaced, threads
 * stopped on close.
 */
class WorkerPoolTest {

    @Test
    void runsEveryTaskExactlyOnceOnNamedDaemonThreads() throws InterruptedException {
        Set<Thread> seen = ConcurrentHashMap.newKeySet();
        AtomicIntegerArray runs = new AtomicIntegerArray(1000);
        try (WorkerPool pool = new WorkerPool(4)) {
            for (int round = 0; round < 20; round++) {
                pool.parallelFor(1000, i -> {
                    runs.incrementAndGet(i);
                    seen.add(Thread.currentThread());
                    if (i % 100 == 0) {
                        Thread.onSpinWait();
                    }
                });
            }
            for (int i = 0; i < 1000; i++) {
                assertEquals(20, runs.get(i), "task " + i);
            }
            for (Thread t : seen) {
                if (t != Thread.currentThread()) {
                    assertTrue(t.isDaemon(), t.getName() + " is not a daemon");
                    assertTrue(t.getName().startsWith("orbit-cpu-"), t.getName());
                }
            }
            assertTrue(seen.size() <= 4, seen.size() + " threads for a pool of 4");
        }
        Thread.sleep(50);
        for (Thread t : seen) {
            if (t != Thread.currentThread()) {
                t.join(5_000);
                assertFalse(t.isAlive(), t.getName() + " still running after close");
            }
        }
    }

    /**
     * Once its jobs are done, an idle pool's workers park: over a 500 ms window after the last job (and a 200 ms settle)
     * the three workers together take at most 50 ms of CPU time (a worker spinning would take up to the whole window).
     */
    @Test
    void anIdlePoolTakesNoCpu() throws InterruptedException {
        java.lang.management.ThreadMXBean mx = java.lang.management.ManagementFactory.getThreadMXBean();
        org.junit.jupiter.api.Assumptions.assumeTrue(mx.isThreadCpuTimeSupported() && mx.isThreadCpuTimeEnabled(),
                "this JVM does not measure per-thread CPU time");
        Set<Thread> workers = ConcurrentHashMap.newKeySet();
        try (WorkerPool pool = new WorkerPool(4)) {
            for (int round = 0; round < 50; round++) {
                pool.parallelFor(64, i -> {
                    if (Thread.currentThread().getName().startsWith("orbit-cpu-")) {
                        workers.add(Thread.currentThread());
                    }
                    double x = i;
                    for (int k = 0; k < 20_000; k++) {
                        x = Math.sqrt(x + k);
                    }
                    if (x < 0) {
                        throw new AssertionError();
                    }
                });
            }
            assertTrue(!workers.isEmpty(), "no task ran on a worker");
            Thread.sleep(200);
            long before = 0;
            for (Thread t : workers) {
                before += mx.getThreadCpuTime(t.threadId());
            }
            Thread.sleep(500);
            long after = 0;
            for (Thread t : workers) {
                after += mx.getThreadCpuTime(t.threadId());
            }
            for (Thread t : workers) {
                Thread.State state = t.getState();
                assertTrue(state == Thread.State.WAITING || state == Thread.State.TIMED_WAITING,
                        t.getName() + " is " + state + " while the pool is idle, not parked");
            }
            double ms = (after - before) / 1e6;
            // a spinning worker takes the whole 500 ms; a parked one next to nothing (the bound leaves room for a
            // loaded machine's wake-ups)
            assertTrue(ms <= 250, workers.size() + " idle workers took " + ms + " ms of CPU in 500 ms");
        }
    }

    @Test
    void aFailingTaskIsRethrownToTheCaller() {
        try (WorkerPool pool = new WorkerPool(3)) {
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> pool.parallelFor(50, i -> {
                if (i == 17) {
                    throw new IllegalStateException("task 17 failed");
                }
            }));
            assertEquals("task 17 failed", e.getMessage());
            AtomicInteger after = new AtomicInteger();
            pool.parallelFor(10, i -> after.incrementAndGet()); // the pool still works
            assertEquals(10, after.get());
        }
    }

    @Test
    void nestedCallsRunInlineWithoutDeadlock() {
        AtomicInteger count = new AtomicInteger();
        try (WorkerPool pool = new WorkerPool(2)) {
            pool.parallelFor(8, i -> pool.parallelFor(8, j -> count.incrementAndGet()));
        }
        assertEquals(64, count.get());
    }

    @Test
    void aClosedPoolRefusesWork() {
        WorkerPool pool = new WorkerPool(2);
        pool.close();
        assertThrows(IllegalStateException.class, () -> pool.parallelFor(4, i -> { }));
        assertThrows(IllegalArgumentException.class, () -> new WorkerPool(0));
    }

    /**
     * A CPU backend dropped without close stops its threads once it is collected: its workers, having run kernels that
     * captured the backend's tensors, keep nothing of it. The backend's three workers, found by name, end within 30 s of
     * collections (a worker holding its last job would keep the backend, and its threads, forever).
     */
    @Test
    void aDroppedBackendStopsItsThreads() throws InterruptedException {
        Set<Thread> before = orbitThreads();
        dropABackendThatRan();
        Set<Thread> started = orbitThreads();
        started.removeAll(before);
        assertEquals(3, started.size(), "workers of a backend of 4 threads: " + started);
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (started.stream().anyMatch(Thread::isAlive) && System.nanoTime() < deadline) {
            System.gc();
            Thread.sleep(20);
        }
        for (Thread t : started) {
            assertFalse(t.isAlive(), t.getName() + " still running 30 s after its backend was dropped");
        }
    }

    private static void dropABackendThatRan() {
        CpuBackend b = new CpuBackend(4);
        java.util.Random r = new java.util.Random(7);
        int m = 96, k = 160, n = 128;
        float[] x = new float[m * k];
        float[] w = new float[n * k];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) r.nextGaussian();
        }
        for (int i = 0; i < w.length; i++) {
            w[i] = (float) r.nextGaussian();
        }
        org.orbitrl.kernels.Tensor y = org.orbitrl.kernels.Tensor.of(new float[m * n], m, n);
        b.matmul(org.orbitrl.kernels.Tensor.of(x, m, k), org.orbitrl.kernels.Tensor.of(w, n, k), y);
        double want = 0;
        for (int j = 0; j < k; j++) {
            want += (double) x[5 * k + j] * w[7 * k + j];
        }
        assertEquals(want, y.getFloat(5, 7), 1e-3 * Math.max(1, Math.abs(want)), "y[5, 7] = x[5] · w[7]");
    }

    private static Set<Thread> orbitThreads() {
        Set<Thread> s = new java.util.HashSet<>();
        for (Thread t : Thread.getAllStackTraces().keySet()) {
            if (t.getName().startsWith("orbit-cpu-")) {
                s.add(t);
            }
        }
        return s;
    }
}
