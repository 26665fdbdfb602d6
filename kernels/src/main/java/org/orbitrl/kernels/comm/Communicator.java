package org.orbitrl.kernels.comm;

import org.orbitrl.kernels.Tensor;

/**
 * A group of ranks (GPUs, or threads standing in for them) that run collectives together. Every
 * rank of the group calls the same collectives in the same order with matching shapes; a call
 * returns once this rank's part is done (on a GPU: enqueued on the rank's stream).
 *
 * <p>Tensors are contiguous and live where the implementation's ranks compute: host memory for
 * {@link LocalGroup}, device memory of the rank's GPU for {@link NcclCommunicator}. Reductions are
 * over f32; moves (gather, broadcast, all-to-all) copy bytes of any dtype. "Rows" are the first
 * dimension; a row is everything after it.
 *
 * <p>Sums are reproducible: the same inputs give bit-identical outputs on every rank and on every
 * run ({@link LocalGroup} adds in rank order; NCCL's ring order is fixed for a given communicator).
 */
public interface Communicator extends AutoCloseable {

    /** This rank's index in the group, {@code 0 <= rank < size}. */
    int rank();

    /** Number of ranks in the group. */
    int size();

    /** In place: {@code buf} (f32, same shape on every rank) becomes the element-wise sum over ranks. */
    void allReduceSum(Tensor buf);

    /**
     * {@code recv} [size·n, ...] = every rank's {@code send} [n, ...] stacked in rank order.
     * Every rank sends the same number of rows.
     */
    void allGather(Tensor send, Tensor recv);

    /**
     * {@code recv} [n, ...] (f32) on rank r = the sum over ranks of rows {@code [r·n, (r+1)·n)} of
     * {@code send} [size·n, ...].
     */
    void reduceScatterSum(Tensor send, Tensor recv);

    /** In place: every rank's {@code buf} becomes rank {@code root}'s. */
    void broadcast(Tensor buf, int root);

    /**
     * Rows per peer in both directions: given how many rows this rank will send to each peer
     * ({@code sendCounts[p]}), returns how many it will receive from each ({@code recv[p]} =
     * what peer p sends here). A small synchronising exchange, done once per dispatch.
     */
    long[] exchangeCounts(long[] sendCounts);

    /**
     * All-to-all with per-peer row counts (send/recv groups on NCCL): {@code send} holds
     * {@code sendCounts[0]} rows for rank 0, then {@code sendCounts[1]} rows for rank 1, ...;
     * {@code recv} receives {@code recvCounts[p]} rows from rank p, in rank order. The counts of
     * both sides must agree ({@link #exchangeCounts}); the row width and dtype must match.
     */
    void allToAll(Tensor send, long[] sendCounts, Tensor recv, long[] recvCounts);

    /**
     * Splits the group: every rank calls it (in the same order as its other collectives) with a
     * color, and gets a communicator over the ranks that chose the same color, ranked in the order
     * of their ranks here. Tensor- and expert-parallel groups are splits of the world group.
     */
    Communicator split(int color);

    /** Returns once every rank of the group has called it (and, on a GPU, its queued work is done). */
    void barrier();

    @Override
    void close();
}
