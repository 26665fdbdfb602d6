package org.orbitrl.kernels.cpu;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.IntConsumer;

/**
 * The CPU backend's threads: a fixed set of named daemon threads that run the tasks of one
 * {@link #parallelFor} at a time, pulled from a shared counter. The calling thread takes part,
 * so a pool of {@code n} threads runs {@code n - 1} workers.
 *
 * <p>Dispatch is built for decode, where a step is hundreds of small kernels: a job is published
 * through one volatile field; idle workers spin on it for {@link #SPIN_NANOS} before
 * parking, so back-to-back kernels start within microseconds and an idle backend costs no CPU.
 * A call made from inside a task, or while another thread's call holds the pool, runs inline on
 * its own thread (no nested fan-out, no deadlock).
 *
 * <p>Which thread runs which task never changes a result: kernels split work over output
 * elements only, and every output element is computed by one task with a fixed reduction order.
 */
final class WorkerPool implements AutoCloseable {

    /** How long an idle worker, or a caller waiting for its tasks, spins before parking. */
    static final long SPIN_NANOS = 50_000;

    private static final AtomicInteger POOLS = new AtomicInteger();
    private static final ThreadLocal<Boolean> INSIDE = ThreadLocal.withInitial(() -> Boolean.FALSE);

    /** One parallelFor: its body, its task counter and its completion count. */
    private static final class Job {
        final long id;
        final int tasks;
        final IntConsumer body;
        final Thread caller;
        final AtomicInteger next = new AtomicInteger();
        final AtomicInteger done = new AtomicInteger();
        final AtomicReference<Throwable> failure = new AtomicReference<>();

        Job(long id, int tasks, IntConsumer body, Thread caller) {
            this.id = id;
            this.tasks = tasks;
            this.body = body;
            this.caller = caller;
        }

        /** Runs tasks until none is left; wakes the caller when the last one finishes. */
        void drain() {
            boolean outer = INSIDE.get();
            INSIDE.set(Boolean.TRUE);
            try {
                for (int i = next.getAndIncrement(); i < tasks; i = next.getAndIncrement()) {
                    try {
                        if (failure.get() == null) {
                            body.accept(i);
                        }
                    } catch (Throwable t) {
                        if (!failure.compareAndSet(null, t)) {
                            failure.get().addSuppressed(t);
                        }
                    }
                    if (done.incrementAndGet() == tasks && Thread.currentThread() != caller) {
                        LockSupport.unpark(caller);
                    }
                }
            } finally {
                INSIDE.set(outer);
            }
        }
    }

    private final int threads;
    private final Thread[] workers;
    private final boolean[] parkedFlags; // written only through the volatile accessors below
    private final ReentrantLock submit = new ReentrantLock();
    private volatile Job current;
    private volatile boolean closed;
    private final AtomicInteger parkedCount = new AtomicInteger();
    private long jobs;   // jobs published; written under submit

    WorkerPool(int threads) {
        if (threads < 1) {
            throw new IllegalArgumentException("CPU backend needs at least one thread, got " + threads);
        }
        this.threads = threads;
        this.workers = new Thread[threads - 1];
        this.parkedFlags = new boolean[threads - 1];
        int pool = POOLS.incrementAndGet();
        for (int i = 0; i < workers.length; i++) {
            int id = i;
            Thread t = new Thread(() -> work(id), "orbit-cpu-" + pool + "-" + (i + 1));
            t.setDaemon(true);
            workers[i] = t;
        }
        for (Thread t : workers) {
            t.start();
        }
    }

    int threads() {
        return threads;
    }

    /**
     * A worker's loop. It remembers the last job it ran by number only: a worker keeps no job (and so no kernel's
     * captured tensors or backend) reachable once the job's caller has cleared it.
     */
    private void work(int id) {
        long seen = 0;
        long idleSince = System.nanoTime();
        while (!closed) {
            Job j = current;
            if (j != null && j.id != seen) {
                seen = j.id;
                j.drain();
                j = null;
                idleSince = System.nanoTime();
                continue;
            }
            j = null;
            if (System.nanoTime() - idleSince < SPIN_NANOS) {
                Thread.onSpinWait();
                continue;
            }
            // announce the park, then look once more: a job published after this check sees the flag. Nothing new to
            // run is both "no job" (the caller clears it as its job ends) and "the job this worker has already run"
            setParked(id, true);
            Job now = current;
            if ((now == null || now.id == seen) && !closed) {
                now = null;
                LockSupport.park(this);
            }
            now = null;
            setParked(id, false);
            idleSince = System.nanoTime();
        }
    }

    private void setParked(int id, boolean parked) {
        synchronized (parkedFlags) {
            parkedFlags[id] = parked;
        }
        parkedCount.addAndGet(parked ? 1 : -1);
    }

    /**
     * Runs {@code body.accept(i)} for every i in [0, tasks), spread over the pool; returns when
     * all have finished. The first exception thrown by a task is rethrown here (the others are
     * attached as suppressed); once a task has failed, the remaining ones are skipped.
     */
    void parallelFor(int tasks, IntConsumer body) {
        if (tasks <= 0) {
            return;
        }
        if (closed) {
            throw new IllegalStateException("CPU backend is closed");
        }
        if (tasks == 1 || workers.length == 0 || INSIDE.get() || !submit.tryLock()) {
            runInline(tasks, body);
            return;
        }
        Job job = new Job(++jobs, tasks, body, Thread.currentThread());
        try {
            current = job;
            if (parkedCount.get() > 0) {
                wakeParked();
            }
            job.drain();
            long waitSince = System.nanoTime();
            while (job.done.get() < tasks) {
                if (System.nanoTime() - waitSince < SPIN_NANOS) {
                    Thread.onSpinWait();
                } else {
                    LockSupport.parkNanos(this, 50_000);
                }
            }
        } finally {
            current = null; // let the job's buffers go; workers that never saw it have nothing to do
            submit.unlock();
        }
        Throwable t = job.failure.get();
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

    private void wakeParked() {
        synchronized (parkedFlags) {
            for (int i = 0; i < workers.length; i++) {
                if (parkedFlags[i]) {
                    LockSupport.unpark(workers[i]);
                }
            }
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

    /** Stops the worker threads and waits for them to end. */
    @Override
    public void close() {
        closed = true;
        for (Thread t : workers) {
            LockSupport.unpark(t);
        }
        boolean interrupted = false;
        for (Thread t : workers) {
            while (t.isAlive()) {
                try {
                    t.join();
                } catch (InterruptedException e) {
                    interrupted = true;
                }
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }
}
