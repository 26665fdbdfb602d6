package org.orbitrl.kernels.comm;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Function;

/**
 * Runs one body per logical rank, each on its own thread with its own {@link Communicator} of a
 * fresh {@link LocalGroup}, and returns the results in rank order. If any rank throws, the group
 * is aborted (so its peers stop waiting) and the first failure is rethrown.
 */
public final class LocalRanks {
    private LocalRanks() {
    }

    public static <T> List<T> run(int size, Function<Communicator, T> body) {
        LocalGroup group = LocalGroup.of(size);
        ExecutorService pool = Executors.newFixedThreadPool(size, r -> {
            Thread t = new Thread(r, "logical-rank");
            t.setDaemon(true);
            return t;
        });
        try {
            List<Future<T>> futures = new ArrayList<>();
            for (int r = 0; r < size; r++) {
                Communicator c = group.communicator(r);
                futures.add(pool.submit(() -> {
                    try {
                        return body.apply(c);
                    } catch (RuntimeException | Error e) {
                        group.abort();
                        throw e;
                    }
                }));
            }
            List<T> out = new ArrayList<>();
            RuntimeException first = null;
            for (int r = 0; r < size; r++) {
                try {
                    out.add(futures.get(r).get());
                } catch (ExecutionException e) {
                    if (first == null) {
                        first = new IllegalStateException("logical rank " + r + " of " + size + " failed: "
                                + e.getCause().getMessage(), e.getCause());
                    }
                    out.add(null);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IllegalStateException("interrupted waiting for logical rank " + r, e);
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
