package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.concurrent.BrokenBarrierException;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * Calls on every rank's thread: results in rank order, each rank on its own thread every time; a rank that fails while
 * the others wait for it (as in a collective) releases them through the abort, and the failure reported is its own,
 * with the others' (the abort they saw) suppressed under it.
 */
class RankThreadsTest {

    @Test
    void resultsComeInRankOrderFromEachRanksOwnThread() throws Exception {
        try (RankThreads t = new RankThreads("test", 3, () -> { })) {
            List<String> first = t.all(r -> Thread.currentThread().getName());
            assertEquals(List.of("test-0", "test-1", "test-2"), first);
            assertEquals(first, t.all(r -> Thread.currentThread().getName()), "the same thread a rank each call");
            assertEquals(List.of(0, 10, 20), t.all(r -> 10 * r));
            assertEquals("test-1", t.on(1, r -> Thread.currentThread().getName()));
        }
    }

    @Test
    void aFailingRankReleasesTheOthersAndIsTheOneReported() throws Exception {
        CyclicBarrier collective = new CyclicBarrier(3);   // ranks 0 and 2 wait for rank 1, as in an all-reduce
        try (RankThreads t = new RankThreads("test", 3, collective::reset)) {
            RankThreads.RankFailure f = assertThrows(RankThreads.RankFailure.class, () -> t.all(r -> {
                if (r == 1) {
                    Thread.sleep(50);   // the others are waiting by now
                    throw new IllegalStateException("rank 1's device is gone");
                }
                return collective.await(30, TimeUnit.SECONDS);
            }));
            assertEquals(1, f.rank());
            assertEquals("rank 1's device is gone", f.getMessage());
            assertEquals(2, f.getSuppressed().length, "the other ranks' failures under it");
            for (Throwable s : f.getSuppressed()) {
                assertInstanceOf(BrokenBarrierException.class, s, "released by the reset (a wait that ran out would be a TimeoutException)");
            }
            // the threads serve the next call
            assertEquals(List.of(0, 1, 2), t.all(r -> r));
        }
    }
}
