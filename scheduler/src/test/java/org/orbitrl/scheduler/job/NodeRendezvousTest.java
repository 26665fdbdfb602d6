package org.orbitrl.scheduler.job;

import org.junit.jupiter.api.Test;

import java.net.ServerSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/** Three "daemons" (threads) of one job on this host agree on node 0's id through the job file's rendezvous. */
class NodeRendezvousTest {

    @Test
    void everyNodeGetsNodeZerosId() throws Exception {
        int port;
        try (ServerSocket probe = new ServerSocket(0)) {
            port = probe.getLocalPort();
        }
        PlacementSpec p = JobFilesTest.parse("model: {path: m}\nplacement: {hosts: [localhost, n1, n2], rendezvous: \"localhost:"
                + port + "\"}\n").placement();
        byte[] id = new byte[128];
        new java.util.SplittableRandom(3).nextBytes(id);
        ExecutorService pool = Executors.newFixedThreadPool(3);
        try {
            List<Future<byte[]>> nodes = new ArrayList<>();
            for (int rank = 2; rank >= 0; rank--) {
                int r = rank;
                nodes.add(pool.submit(() -> NodeRendezvous.sharedId("job-x", p, r,
                        () -> r == 0 ? id.clone() : new byte[128], Duration.ofSeconds(20))));
            }
            for (Future<byte[]> f : nodes) {
                assertArrayEquals(id, f.get());
            }
        } finally {
            pool.shutdownNow();
        }
        PlacementSpec single = JobFilesTest.parse("model: {path: m}\n").placement();
        assertEquals(1, single.nodes());
        assertArrayEquals(id, NodeRendezvous.sharedId("job-y", single, 0, id::clone, Duration.ofSeconds(1)));
    }
}
