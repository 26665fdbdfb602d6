package org.orbitrl.kernels.comm;

import org.junit.jupiter.api.Test;

import java.io.IOException;
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

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The TCP rendezvous on one host: rank 0 serves a 128-byte id, other ranks join from threads. */
class RendezvousTest {

    private static byte[] id() {
        byte[] b = new byte[NcclCommunicator.UNIQUE_ID_BYTES];
        new SplittableRandom(5).nextBytes(b);
        return b;
    }

    @Test
    void everyRankReceivesTheServedIdEvenWhenJoiningFirst() throws Exception {
        int world = 4;
        byte[] id = id();
        ExecutorService pool = Executors.newFixedThreadPool(world);
        try (ServerSocket probe = new ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
            InetSocketAddress addr = new InetSocketAddress(InetAddress.getLoopbackAddress(), probe.getLocalPort());
            probe.close();
            List<Future<byte[]>> joins = new ArrayList<>();
            for (int r = world - 1; r >= 1; r--) {   // clients start before the server is up
                int rank = r;
                joins.add(pool.submit(() -> Rendezvous.join(addr, "job-a", rank, world, Duration.ofSeconds(20))));
            }
            Thread.sleep(200);
            Future<?> server = pool.submit(() -> {
                Rendezvous.serve(addr, "job-a", world, id, Duration.ofSeconds(20));
                return null;
            });
            for (Future<byte[]> f : joins) {
                assertArrayEquals(id, f.get());
            }
            server.get();
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void wrongJobWrongWorldAndDuplicateRanksAreRefusedWithTheReason() throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(2);
        try (ServerSocket ss = new ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
            InetSocketAddress addr = (InetSocketAddress) ss.getLocalSocketAddress();
            Future<?> server = pool.submit(() -> {
                Rendezvous.serve(ss, "job-b", 3, id(), Duration.ofSeconds(20));
                return null;
            });
            var wrongJob = assertThrows(Rendezvous.RendezvousRefusedException.class,
                    () -> Rendezvous.join(addr, "job-x", 1, 3, Duration.ofSeconds(5)));
            assertTrue(wrongJob.getMessage().contains("job-b"), wrongJob.getMessage());
            var wrongWorld = assertThrows(Rendezvous.RendezvousRefusedException.class,
                    () -> Rendezvous.join(addr, "job-b", 1, 4, Duration.ofSeconds(5)));
            assertTrue(wrongWorld.getMessage().contains("world size 3"), wrongWorld.getMessage());
            var rankZero = assertThrows(Rendezvous.RendezvousRefusedException.class,
                    () -> Rendezvous.join(addr, "job-b", 0, 3, Duration.ofSeconds(5)));
            assertTrue(rankZero.getMessage().contains("rank 0 serves"), rankZero.getMessage());
            assertArrayEquals(id(), Rendezvous.join(addr, "job-b", 1, 3, Duration.ofSeconds(5)));
            var twice = assertThrows(Rendezvous.RendezvousRefusedException.class,
                    () -> Rendezvous.join(addr, "job-b", 1, 3, Duration.ofSeconds(5)));
            assertTrue(twice.getMessage().contains("already joined"), twice.getMessage());
            assertArrayEquals(id(), Rendezvous.join(addr, "job-b", 2, 3, Duration.ofSeconds(5)));
            server.get();
        } finally {
            pool.shutdownNow();
        }
    }

    @Test
    void aServerNamesTheRanksThatNeverCame() throws Exception {
        try (ServerSocket ss = new ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
            var e = assertThrows(IOException.class,
                    () -> Rendezvous.serve(ss, "job-c", 3, id(), Duration.ofMillis(300)));
            assertTrue(e.getMessage().contains("[1, 2]"), e.getMessage());
        }
    }

    @Test
    void aClientGivesUpWhenNobodyServes() throws Exception {
        int port;
        try (ServerSocket probe = new ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
            port = probe.getLocalPort();
        }
        var e = assertThrows(IOException.class, () -> Rendezvous.join(
                new InetSocketAddress(InetAddress.getLoopbackAddress(), port), "job-d", 1, 2, Duration.ofMillis(500)));
        assertTrue(e.getMessage().contains("could not reach"), e.getMessage());
    }
}
