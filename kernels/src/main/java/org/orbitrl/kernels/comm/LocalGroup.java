package org.orbitrl.kernels.comm;

import org.orbitrl.kernels.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Logical ranks in one JVM: {@code size} threads stand in for GPUs and share this group object.
 * Each collective posts every rank's buffer, meets at a barrier, lets each rank read what it needs
 * from the others' host memory, meets again (so nobody overwrites a buffer another rank is still
 * reading), and only then writes its own output. Sums add the ranks' values in rank order
 * 0, 1, ..., size−1 in f32, so every rank gets bit-identical results on every run.
 *
 * <p>Tensors must be host memory that every rank's thread may read (an automatic or shared
 * arena; not a confined one). If a rank fails or a peer does not arrive within the timeout, the
 * group is broken and every waiting rank throws instead of hanging.
 */
public final class LocalGroup {
    private final int size;
    private final Object lock = new Object();
    private int arrived;        // ranks waiting at the current barrier
    private long generation;    // barriers completed
    private boolean broken;
    private final long timeoutMillis;
    private final Object[] posted;   // per rank: what it contributes to the current collective
    private final long[][] counts;   // per rank: counts posted for exchangeCounts
    private final java.util.Map<String, LocalGroup> splits = new java.util.concurrent.ConcurrentHashMap<>();

    private LocalGroup(int size, long timeoutMillis) {
        if (size < 1) {
            throw new IllegalArgumentException("a group needs at least one rank, got " + size);
        }
        this.size = size;
        this.timeoutMillis = timeoutMillis;
        this.posted = new Object[size];
        this.counts = new long[size][];
    }

    /** A group of {@code size} logical ranks; a collective waits at most 60 s for its peers. */
    public static LocalGroup of(int size) {
        return new LocalGroup(size, 60_000);
    }

    public int size() {
        return size;
    }

    /** The communicator of one rank; each rank's thread uses its own. */
    public Communicator communicator(int rank) {
        if (rank < 0 || rank >= size) {
            throw new IllegalArgumentException("rank " + rank + " outside a group of " + size);
        }
        return new Rank(rank);
    }

    /** Breaks the group for good: every rank waiting in a collective, or arriving at one, throws. */
    public void abort() {
        synchronized (lock) {
            broken = true;
            lock.notifyAll();
        }
        splits.values().forEach(LocalGroup::abort);
    }

    /** A barrier that stays broken once a rank failed, so late arrivals throw instead of waiting. */
    private void await(String op, int rank) {
        synchronized (lock) {
            if (broken) {
                throw brokenGroup(op, rank);
            }
            long gen = generation;
            if (++arrived == size) {
                arrived = 0;
                generation++;
                lock.notifyAll();
                return;
            }
            long deadline = System.nanoTime() + timeoutMillis * 1_000_000;
            while (gen == generation && !broken) {
                long left = (deadline - System.nanoTime()) / 1_000_000;
                if (left <= 0) {
                    broken = true;
                    lock.notifyAll();
                    break;
                }
                try {
                    lock.wait(left);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    broken = true;
                    lock.notifyAll();
                    throw new IllegalStateException(op + ": rank " + rank + " interrupted waiting for its peers", e);
                }
            }
            if (gen == generation) {
                throw brokenGroup(op, rank);
            }
        }
    }

    private IllegalStateException brokenGroup(String op, int rank) {
        return new IllegalStateException(op + ": rank " + rank + " of " + size + " gave up waiting for its peers"
                + " (a peer failed, or called a different collective, or none came for " + timeoutMillis + " ms)");
    }

    private static MemorySegment bytes(Tensor t) {
        return t.segment().asSlice(t.byteOffset(), t.byteSize());
    }

    private final class Rank implements Communicator {
        private final int rank;

        Rank(int rank) {
            this.rank = rank;
        }

        @Override
        public int rank() {
            return rank;
        }

        @Override
        public int size() {
            return size;
        }

        @Override
        public void allReduceSum(Tensor buf) {
            String op = "allReduceSum";
            CommChecks.f32(op, "buffer", buf);
            CommChecks.contiguous(op, "buffer", buf);
            float[] sum = reduce(op, buf, 0, buf.numel());
            MemorySegment.copy(sum, 0, bytes(buf), ValueLayout.JAVA_FLOAT_UNALIGNED, 0, sum.length);
        }

        /** Posts {@code mine}, sums elements [from, from+n) of every rank's posted tensor in rank order. */
        private float[] reduce(String op, Tensor mine, long from, long n) {
            posted[rank] = mine;
            await(op, rank);
            float[] sum = new float[Math.toIntExact(n)];
            try {
                for (int r = 0; r < size; r++) {
                    Tensor t = (Tensor) posted[r];
                    if (t.numel() != mine.numel()) {
                        throw new IllegalArgumentException(op + ": rank " + r + " has " + t + ", rank " + rank + " has "
                                + mine);
                    }
                    MemorySegment s = bytes(t);
                    for (int i = 0; i < sum.length; i++) {
                        sum[i] += s.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, from + i);
                    }
                }
            } finally {
                await(op, rank);
            }
            return sum;
        }

        @Override
        public void allGather(Tensor send, Tensor recv) {
            String op = "allGather";
            CommChecks.contiguous(op, "send", send);
            CommChecks.contiguous(op, "recv", recv);
            if (recv.byteSize() != send.byteSize() * size || recv.dtype() != send.dtype()) {
                throw new IllegalArgumentException(op + ": receive " + recv + " must hold " + size + " × send " + send);
            }
            posted[rank] = send;
            await(op, rank);
            try {
                MemorySegment out = bytes(recv);
                for (int r = 0; r < size; r++) {
                    Tensor t = (Tensor) posted[r];
                    if (t.byteSize() != send.byteSize()) {
                        throw new IllegalArgumentException(op + ": rank " + r + " sends " + t + ", rank " + rank
                                + " sends " + send);
                    }
                    MemorySegment.copy(bytes(t), 0, out, r * send.byteSize(), send.byteSize());
                }
            } finally {
                await(op, rank);
            }
        }

        @Override
        public void reduceScatterSum(Tensor send, Tensor recv) {
            String op = "reduceScatterSum";
            CommChecks.f32(op, "send", send);
            CommChecks.f32(op, "recv", recv);
            CommChecks.contiguous(op, "send", send);
            CommChecks.contiguous(op, "recv", recv);
            if (send.numel() != recv.numel() * size) {
                throw new IllegalArgumentException(op + ": send " + send + " must hold " + size + " × receive " + recv);
            }
            float[] part = reduce(op, send, rank * recv.numel(), recv.numel());
            MemorySegment.copy(part, 0, bytes(recv), ValueLayout.JAVA_FLOAT_UNALIGNED, 0, part.length);
        }

        @Override
        public void broadcast(Tensor buf, int root) {
            String op = "broadcast";
            CommChecks.contiguous(op, "buffer", buf);
            if (root < 0 || root >= size) {
                throw new IllegalArgumentException(op + ": root " + root + " outside a group of " + size);
            }
            posted[rank] = buf;
            await(op, rank);
            MemorySegment copy = null;
            try {
                Tensor src = (Tensor) posted[root];
                if (src.byteSize() != buf.byteSize()) {
                    throw new IllegalArgumentException(op + ": root " + root + " has " + src + ", rank " + rank + " has "
                            + buf);
                }
                if (rank != root) {
                    copy = MemorySegment.ofArray(new byte[Math.toIntExact(buf.byteSize())]);
                    copy.copyFrom(bytes(src));
                }
            } finally {
                await(op, rank);
            }
            if (copy != null) {
                bytes(buf).copyFrom(copy);
            }
        }

        @Override
        public long[] exchangeCounts(long[] sendCounts) {
            String op = "exchangeCounts";
            if (sendCounts.length != size) {
                throw new IllegalArgumentException(op + ": " + sendCounts.length + " counts for " + size + " ranks");
            }
            counts[rank] = sendCounts.clone();
            await(op, rank);
            long[] recv = new long[size];
            try {
                for (int p = 0; p < size; p++) {
                    recv[p] = counts[p][rank];
                }
            } finally {
                await(op, rank);
            }
            return recv;
        }

        @Override
        public void allToAll(Tensor send, long[] sendCounts, Tensor recv, long[] recvCounts) {
            String op = "allToAll";
            CommChecks.contiguous(op, "send", send);
            CommChecks.contiguous(op, "recv", recv);
            CommChecks.counts(op, size, sendCounts, recvCounts, send, recv);
            posted[rank] = new Object[]{send, sendCounts};
            await(op, rank);
            try {
                long rowBytes = CommChecks.rowWidth(recv) * recv.dtype().bytes();
                MemorySegment out = bytes(recv);
                long at = 0;
                for (int p = 0; p < size; p++) {
                    Object[] peer = (Object[]) posted[p];
                    Tensor ps = (Tensor) peer[0];
                    long[] pc = (long[]) peer[1];
                    if (pc[rank] != recvCounts[p]) {
                        throw new IllegalArgumentException(op + ": rank " + p + " sends " + pc[rank] + " rows to rank "
                                + rank + ", which expects " + recvCounts[p]);
                    }
                    long skip = 0;
                    for (int q = 0; q < rank; q++) {
                        skip += pc[q];
                    }
                    long n = recvCounts[p] * rowBytes;
                    if (n > 0) {
                        MemorySegment.copy(bytes(ps), skip * rowBytes, out, at, n);
                    }
                    at += n;
                }
            } finally {
                await(op, rank);
            }
        }

        private int splitCount; // splits this rank has made: the same sequence on every rank

        @Override
        public Communicator split(int color) {
            String op = "split";
            posted[rank] = color;
            await(op, rank);
            int index = 0;
            int members = 0;
            try {
                for (int r = 0; r < size; r++) {
                    if ((Integer) posted[r] == color) {
                        if (r < rank) {
                            index++;
                        }
                        members++;
                    }
                }
            } finally {
                await(op, rank);
            }
            int n = members;
            LocalGroup child = splits.computeIfAbsent(splitCount++ + ":" + color, k -> new LocalGroup(n, timeoutMillis));
            if (broken) {
                child.abort();
            }
            return child.communicator(index);
        }

        @Override
        public void barrier() {
            await("barrier", rank);
        }

        @Override
        public void close() {
            // the group owns nothing native; threads are the caller's
        }

        @Override
        public String toString() {
            return "local rank " + rank + "/" + size;
        }
    }
}
