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
            for (NcclCommunicator c : comms) {
                futures.add(pool.submit(() -> {
                    try {
                        return body.run(c, c.backend());
                    } catch (Exception | Error e) {
                        comms.forEach(NcclCommunicator::abort);
                        throw e;
                    }
                }));
            }
            List<T> out = new ArrayList<>();
            RuntimeException first = null;
            for (int r = 0; r < n; r++) {
                try {
                    out.add(futures.get(r).get());
                } catch (ExecutionException e) {
                    if (first == null) {
                        first = new IllegalStateException("GPU rank " + r + " of " + n + " (" + comms.get(r).backend().name()
                                + ") failed: " + e.getCause().getMessage(), e.getCause());
                    }
                    out.add(null);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    comms.forEach(NcclCommunicator::abort);
                    throw new IllegalStateException("interrupted waiting for GPU rank " + r, e);
                }
            }
            if (first != null) {
                throw first;
            }
            return out;
        } finally {
            pool.shutdownNow();
        }
    }
}
