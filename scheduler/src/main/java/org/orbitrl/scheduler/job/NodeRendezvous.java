package org.orbitrl.scheduler.job;

import org.orbitrl.kernels.comm.Rendezvous;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.function.Supplier;

/**
 * How the daemons of a multi-node job agree on one communicator id before any of them starts
 * NCCL: the daemon of node 0 makes the id and serves it at the placement's rendezvous address;
 * every other node's daemon joins with the job's name, its node rank and the node count. One
 * exchange per node; each daemon then starts its local ranks from the id.
 */
public final class NodeRendezvous {
    private NodeRendezvous() {
    }

    /**
     * The id all nodes of {@code job} share. On node 0: {@code makeId} (e.g.
     * {@code NcclCommunicator::newUniqueId}), served until every other node has it; elsewhere: the id
     * node 0 serves. A single-node job just makes its id.
     */
    public static byte[] sharedId(String job, PlacementSpec placement, int nodeRank, Supplier<byte[]> makeId,
                                  Duration timeout) throws IOException {
        int nodes = placement.nodes();
        if (nodeRank < 0 || nodeRank >= nodes) {
            throw new IllegalArgumentException("job " + job + ": node rank " + nodeRank + " outside its " + nodes + " nodes");
        }
        if (nodes == 1) {
            return makeId.get();
        }
        InetSocketAddress at = placement.rendezvousAddress();
        if (nodeRank == 0) {
            byte[] id = makeId.get();
            Rendezvous.serve(new InetSocketAddress(at.getPort()), job, nodes, id, timeout);
            return id;
        }
        return Rendezvous.join(new InetSocketAddress(at.getHostString(), at.getPort()), job, nodeRank, nodes, timeout);
    }
}
