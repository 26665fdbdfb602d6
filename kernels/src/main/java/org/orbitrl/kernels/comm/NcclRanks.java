package org.orbitrl.kernels.comm;

import org.orbitrl.kernels.cuda.CudaBackend;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Runs one body per GPU rank, each on its own thread with its communicator and that GPU's backend, and returns the
 * results in rank order: the GPU counterpart of {@link LocalRanks}. If a rank throws, every communicator is aborted
 * ({@link NcclCommunicator#abort}), so the other ranks' collectives fail instead of waiting forever for it, and the first
 * failure is rethrown naming its rank.
 */
public final class NcclRanks {
    private NcclRanks() {
    }

    /** A rank's work: its communicator (of the world the list makes) and its GPU's backend. */
    public interface Body<T> {
        T run(NcclCommunicator comm, CudaBackend gpu) throws Exception;
    }

    public static <T> List<T> run(List<NcclCommunicator> comms, Body<T> body) {
        int n = comms.size();
        ExecutorService pool = Executors.newFixedThreadPool(n, r -> {
            Thread t = new Thread(r, "gpu-rank");
            t.setDaemon(true);
            return t;
        });
        try {
            List<Future<T>> futures = new ArrayList<>();
            // the rank that failed first in time: the others' failures are usually the abort it caused
            java.util.concurrent.atomic.AtomicInteger firstRank = new java.util.concurrent.atomic.AtomicInteger(-1);
            for (int i = 0; i < n; i++) {
                NcclCommunicator c = comms.get(i);
                int rank = i;
                futures.add(pool.submit(() -> {
                    try {
                        return body.run(c, c.backend());
                    } catch (Exception | Error e) {
                        if (firstRank.compareAndSet(-1, rank)) {
                            comms.forEach(NcclCommunicator::abort);
                        }
                        throw e;
                    }
                }));
            }
            List<T> out = new ArrayList<>();
            Throwable[] failures = new Throwable[n];
            for (int r = 0; r < n; r++) {
                try {
                    out.add(futures.get(r).get());
                } catch (ExecutionException e) {
                    failures[r] = e.getCause();
                    out.add(null);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    comms.forEach(NcclCommunicator::abort);
                    throw new IllegalStateException("interrupted waiting for GPU rank " + r, e);
                }
            }
            int f = firstRank.get();
            if (f >= 0) {
                IllegalStateException first = new IllegalStateException("GPU rank " + f + " of " + n + " ("
                        + comms.get(f).backend().name() + ") failed: " + failures[f].getMessage(), failures[f]);
                for (int r = 0; r < n; r++) {
                    if (r != f && failures[r] != null) {
                        first.addSuppressed(failures[r]);
                    }
                }
                throw first;
            }
            return out;
        } finally {
            pool.shutdownNow();
        }
    }
}
