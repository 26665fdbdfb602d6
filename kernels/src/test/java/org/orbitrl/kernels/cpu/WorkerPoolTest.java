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

/** The backend's thread pool: every task once, named daemon threads, errors surfaced, threads stopped on close. */
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
}
