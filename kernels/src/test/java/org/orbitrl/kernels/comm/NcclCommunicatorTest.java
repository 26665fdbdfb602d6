package org.orbitrl.kernels.comm;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.BiFunction;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * NCCL collectives over every GPU of the machine (one thread and backend per GPU) against the same
 * collectives of {@link LocalGroup} on the host, on seeded random data: moves (gather, broadcast,
 * all-to-all) must be bit-exact; sums within 1e-6 + 1e-6·Σ|x| per element (NCCL's ring may add in
 * another order). Over every GPU of the machine: on a machine of one, a world of one (every call of the binding, each
 * rank sending to and receiving from itself).
 */
class NcclCommunicatorTest {
    static int gpus;

    @BeforeAll
    static void needTwoGpus() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        gpus = Math.min(8, Cuda.deviceCount());
        assumeTrue(gpus >= 1, () -> "NCCL tests need a GPU; this machine has none");
    }

    /** Runs body(rank communicator, rank backend) on one thread per GPU over ncclCommInitAll. */
    private static <T> List<T> onGpus(BiFunction<Communicator, CudaBackend, T> body) throws Exception {
        List<CudaBackend> backends = new ArrayList<>();
        for (int i = 0; i < gpus; i++) {
            backends.add(new CudaBackend(i, CudaBackend.defaultCacheDir()));
        }
        List<NcclCommunicator> comms = NcclCommunicator.initAll(backends);
        try {
            return NcclRanks.run(comms, body::apply);
        } finally {
            comms.forEach(NcclCommunicator::close);
            backends.forEach(CudaBackend::close);
        }
    }

    private static float[] random(long seed, int n) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return v;
    }

    private static long[] sendCounts(int rank, int size) {
        long[] c = new long[size];
        for (int q = 0; q < size; q++) {
            c[q] = (rank * 3L + q * 5L) % 4;
        }
        return c;
    }

    /** The same sequence of collectives on any communicator, with host tensors in and out. */
    private static float[] script(Communicator c, java.util.function.UnaryOperator<Tensor> toDev,
                                  java.util.function.UnaryOperator<Tensor> toHost) {
        int r = c.rank();
        int n = c.size();
        List<Float> out = new ArrayList<>();
        Tensor sum = toDev.apply(Tensor.of(random(100 + r, 4099), 4099));
        c.allReduceSum(sum);
        Tensor gathered = toDev.apply(Tensor.of(new float[n * 6], n * 2L, 3));
        c.allGather(toDev.apply(Tensor.of(random(200 + r, 6), 2, 3)), gathered);
        Tensor scattered = toDev.apply(Tensor.of(new float[5], 5));
        c.reduceScatterSum(toDev.apply(Tensor.of(random(300 + r, 5 * n), 5L * n)), scattered);
        Tensor bc = toDev.apply(Tensor.of(random(400 + r, 7), 7));
        c.broadcast(bc, n - 1);
        long[] sc = sendCounts(r, n);
        long[] rc = c.exchangeCounts(sc);
        int rows = (int) java.util.Arrays.stream(sc).sum();
        int rrows = (int) java.util.Arrays.stream(rc).sum();
        Tensor a2a = toDev.apply(Tensor.of(new float[Math.max(1, rrows) * 3], Math.max(1, rrows), 3));
        c.allToAll(toDev.apply(Tensor.of(random(500 + r, Math.max(1, rows) * 3), Math.max(1, rows), 3)), sc, a2a, rc);
        for (Tensor t : List.of(sum, gathered, scattered, bc, a2a)) {
            for (float f : toHost.apply(t).toFloatArray()) {
                out.add(f);
            }
        }
        float[] o = new float[out.size()];
        for (int i = 0; i < o.length; i++) {
            o[i] = out.get(i);
        }
        return o;
    }

    @Test
    void ncclMatchesLogicalRanks() throws Exception {
        List<float[]> ref = LocalRanks.run(gpus, c -> script(c, t -> t, t -> t));
        List<float[]> got = onGpus((c, b) -> script(c, b::toDevice, b::toHost));
        int sumLen = 4099;
        for (int r = 0; r < gpus; r++) {
            float[] e = ref.get(r);
            float[] g = got.get(r);
            assertEquals(e.length, g.length, "rank " + r + " result length");
            for (int i = 0; i < g.length; i++) {
                boolean summed = i < sumLen || (i >= sumLen + gpus * 6 && i < sumLen + gpus * 6 + 5);
                double tol = summed ? 1e-6 + 1e-6 * gpus : 0;
                assertEquals(e[i], g[i], tol, "rank " + r + " element " + i + (summed ? " (sum)" : " (move)"));
            }
        }
    }

    /** Multi-node bootstrap on one host: the unique id travels over the TCP rendezvous, then ncclCommInitRank. */
    @Test
    void initRankThroughTheRendezvous() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(gpus + 1);
        try (ServerSocket ss = new ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
            InetSocketAddress addr = (InetSocketAddress) ss.getLocalSocketAddress();
            byte[] id = NcclCommunicator.newUniqueId();
            Future<?> server = pool.submit(() -> {
                Rendezvous.serve(ss, "nccl-test", gpus, id, Duration.ofSeconds(60));
                return null;
            });
            List<Future<float[]>> ranks = new ArrayList<>();
            for (int r = 0; r < gpus; r++) {
                int rank = r;
                ranks.add(pool.submit(() -> {
                    byte[] myId = rank == 0 ? id : Rendezvous.join(addr, "nccl-test", rank, gpus, Duration.ofSeconds(60));
                    try (CudaBackend b = new CudaBackend(rank, CudaBackend.defaultCacheDir());
                         NcclCommunicator c = NcclCommunicator.initRank(b, myId, rank, gpus)) {
                        Tensor t = b.toDevice(Tensor.of(new float[]{rank + 1, 2 * (rank + 1)}, 2));
                        c.allReduceSum(t);
                        return b.toHost(t).toFloatArray();
                    }
                }));
            }
            float s = gpus * (gpus + 1) / 2f;
            for (Future<float[]> f : ranks) {
                assertArrayEquals(new float[]{s, 2 * s}, f.get(), 0f);
            }
            server.get();
        } finally {
            pool.shutdownNow();
        }
    }
}
