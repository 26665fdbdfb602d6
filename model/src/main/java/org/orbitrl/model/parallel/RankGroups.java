package org.orbitrl.model.parallel;

import org.orbitrl.kernels.comm.Communicator;

/**
 * One rank's communicators for a {@link ParallelLayout}: the world group, its tensor-parallel
 * group (ranks {@code [g·tp, (g+1)·tp)}) and its expert-parallel group (ranks
 * {@code [g·ep, (g+1)·ep)}), split from the world group. Every rank builds its own, at the same
 * point of its program.
 */
public record RankGroups(ParallelLayout layout, Communicator world, Communicator tp, Communicator ep) {

    public RankGroups {
        if (world.size() != layout.world() || tp.size() != layout.tp() || ep.size() != layout.ep()) {
            throw new IllegalArgumentException(layout + " does not match communicators of sizes world " + world.size()
                    + ", tp " + tp.size() + ", ep " + ep.size());
        }
    }

    /** Splits {@code world} into this rank's tensor- and expert-parallel groups (collective: every rank calls it). */
    public static RankGroups split(ParallelLayout layout, Communicator world) {
        if (world.size() != layout.world()) {
            throw new IllegalArgumentException(layout + " on a group of " + world.size() + " ranks");
        }
        Communicator tp = world.split(world.rank() / layout.tp());
        Communicator ep = world.split(world.rank() / layout.ep());
        return new RankGroups(layout, world, tp, ep);
    }

    public int rank() {
        return world.rank();
    }

    public int tpRank() {
        return tp.rank();
    }

    public int epRank() {
        return ep.rank();
    }
}
