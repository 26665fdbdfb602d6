package org.orbitrl.kernels.cpu;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.IntConsumer;

/**
 * The CPU backend's threads: a fixed set of named daemon threads that run the tasks of one
 * {@link #parallelFor} at a time, pulled from a shared counter. The calling thread takes part,
 * so a pool of {@code n} threads runs {@code n - 1} workers. A call made from inside a task runs
 * inline (no nested fan-out, no deadlock).
 *
 * <p>Which thread runs which task never changes a result: kernels split work over output
 * elements only, and every output element is computed by one task with a fixed reduction order.
 */
final class WorkerPool implements AutoCloseable {

    private static final AtomicInteger POOLS = new AtomicInteger();
    private static final ThreadLocal<Boolean> INSIDE = ThreadLocal.withInitial(() -> Boolean.FALSE);

    private final int threads;
    private final ExecutorService workers; // null when threads == 1

    WorkerPool(int threads) {
        if (threads < 1) {
            throw new IllegalArgumentException("CPU backend needs at least one thread, got " + threads);
        }
        this.threads = threads;
        if (threads == 1) {
            this.workers = null;
            return;
        }
        int pool = POOLS.incrementAndGet();
        AtomicInteger count = new AtomicInteger();
        this.workers = new ThreadPoolExecutor(threads - 1, threads - 1, 0, TimeUnit.SECONDS,
                new LinkedBlockingQueue<>(), r -> {
                    Thread t = new Thread(r, "orbit-cpu-" + pool + "-" + count.incrementAndGet());
                    t.setDaemon(true);
                    return t;
                });
    }

    int threads() {
        return threads;
    }

    /**
     * Runs {@code body.accept(i)} for every i in [0, tasks), spread over the pool; returns when
     * all have finished. The first exception thrown by a task is rethrown here (the others are
     * attached as suppressed).
     */
    void parallelFor(int tasks, IntConsumer body) {
        if (tasks <= 0) {
            return;
        }
        if (tasks == 1 || workers == null || INSIDE.get()) {
            runInline(tasks, body);
            return;
        }
        int helpers = Math.min(threads, tasks) - 1;
        AtomicInteger next = new AtomicInteger();
        AtomicReference<Throwable> failure = new AtomicReference<>();
        CountDownLatch done = new CountDownLatch(helpers);
        Runnable drain = () -> drain(tasks, body, next, failure);
        for (int h = 0; h < helpers; h++) {
            try {
                workers.execute(() -> {
                    try {
                        drain.run();
                    } finally {
                        done.countDown();
                    }
                });
            } catch (RejectedExecutionException e) {
                throw new IllegalStateException("CPU backend is closed", e);
            }
        }
        drain.run();
        boolean interrupted = false;
        while (true) {
            try {
                done.await();
                break;
            } catch (InterruptedException e) {
                interrupted = true; // tasks still write into caller buffers: wait for them regardless
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
        Throwable t = failure.get();
        if (t instanceof RuntimeException re) {
            throw re;
        }
        if (t instanceof Error err) {
            throw err;
        }
        if (t != null) {
            throw new IllegalStateException("CPU kernel failed", t);
        }
    }

    private static void drain(int tasks, IntConsumer body, AtomicInteger next, AtomicReference<Throwable> failure) {
        boolean outer = INSIDE.get();
        INSIDE.set(Boolean.TRUE);
        try {
            for (int i = next.getAndIncrement(); i < tasks; i = next.getAndIncrement()) {
                if (failure.get() != null) {
                    return;
                }
                try {
                    body.accept(i);
                } catch (Throwable t) {
                    if (!failure.compareAndSet(null, t)) {
                        failure.get().addSuppressed(t);
                    }
                }
            }
        } finally {
            INSIDE.set(outer);
        }
    }

    private static void runInline(int tasks, IntConsumer body) {
        boolean outer = INSIDE.get();
        INSIDE.set(Boolean.TRUE);
        try {
            for (int i = 0; i < tasks; i++) {
                body.accept(i);
            }
        } finally {
            INSIDE.set(outer);
        }
    }

    /** Stops the worker threads; waits briefly for running tasks. */
    @Override
    public void close() {
        if (workers == null) {
            return;
        }
        workers.shutdown();
        try {
            if (!workers.awaitTermination(10, TimeUnit.SECONDS)) {
                workers.shutdownNow();
            }
        } catch (InterruptedException e) {
            workers.shutdownNow();
            Thread.currentThread().interrupt();
        }
    }
}
