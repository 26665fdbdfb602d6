package org.orbitrl.scheduler.loop;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One thread a rank (a device's trainer, rollout engine, or block of a split model), each the only thread its rank's
 * work runs on (Chronicle's appenders and tailers, and a device's collectives, stay on the thread that made them), and
 * calls run on every rank at once: the rank that fails first in time aborts the others (their collectives, their waits
 * on it) and is the one reported, the others' failures (usually that abort) suppressed under it.
 */
final class RankThreads implements AutoCloseable {

    /** Work for one rank. */
    interface Call<T> {
        T run(int rank) throws Exception;
    }

    /** A call that failed on a rank: the first to fail in time, its cause the rank's. */
    static final class RankFailure extends Exception {
        private final int rank;

        RankFailure(int rank, Throwable cause) {
            super(cause.getMessage(), cause);
            this.rank = rank;
        }

        int rank() {
            return rank;
        }
    }

    private final List<ExecutorService> threads = new ArrayList<>();
    private final Runnable abort;

    /**
     * @param name  the threads' names: {@code name}-0, {@code name}-1, ...
     * @param abort releases the other ranks when one fails (aborts their communicators, breaks their barriers)
     */
    RankThreads(String name, int ranks, Runnable abort) {
        this.abort = abort;
        for (int r = 0; r < ranks; r++) {
            String n = name + "-" + r;
            threads.add(Executors.newSingleThreadExecutor(task -> {
                Thread t = new Thread(task, n);
                t.setDaemon(true);
                return t;
            }));
        }
    }

    int size() {
        return threads.size();
    }

    /** {@code call} on every rank at once, each on its thread; the results in rank order. */
    <T> List<T> all(Call<T> call) throws RankFailure, InterruptedException {
        int n = threads.size();
        AtomicInteger first = new AtomicInteger(-1);
        List<Future<T>> fs = new ArrayList<>();
        for (int r = 0; r < n; r++) {
            int rank = r;
            fs.add(threads.get(r).submit(() -> {
                try {
                    return call.run(rank);
                } catch (Exception | Error e) {
                    if (first.compareAndSet(-1, rank)) {
                        abort.run();
                    }
                    throw e;
                }
            }));
        }
        List<T> out = new ArrayList<>();
        Throwable[] failures = new Throwable[n];
        for (int r = 0; r < n; r++) {
            try {
                out.add(fs.get(r).get());
            } catch (ExecutionException e) {
                failures[r] = e.getCause();
                out.add(null);
            } catch (InterruptedException e) {
                abort.run();
                fs.forEach(f -> f.cancel(true));
                throw e;
            }
        }
        int failed = first.get();
        if (failed >= 0) {
            RankFailure f = new RankFailure(failed, failures[failed]);
            for (int r = 0; r < n; r++) {
                if (r != failed && failures[r] != null) {
                    f.addSuppressed(failures[r]);
                }
            }
            throw f;
        }
        return out;
    }

    /** {@code call} on rank {@code rank}'s thread alone. */
    <T> T on(int rank, Call<T> call) throws RankFailure, InterruptedException {
        try {
            return threads.get(rank).submit(() -> call.run(rank)).get();
        } catch (ExecutionException e) {
            throw new RankFailure(rank, e.getCause());
        }
    }

    /**
     * Interrupts the ranks' threads and waits for them to end (up to a minute each), so that what they used may be
     * closed after this returns.
     */
    @Override
    public void close() {
        threads.forEach(ExecutorService::shutdownNow);
        for (ExecutorService t : threads) {
            try {
                t.awaitTermination(1, java.util.concurrent.TimeUnit.MINUTES);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
        }
    }
}
