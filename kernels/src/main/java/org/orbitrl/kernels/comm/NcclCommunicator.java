package org.orbitrl.kernels.comm;

import org.bytedeco.cuda.global.nccl;
import org.bytedeco.cuda.nccl.ncclComm;
import org.bytedeco.cuda.nccl.ncclUniqueId;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.cuda.internal.DevicePointer;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.List;

/**
 * A {@link Communicator} over NCCL for one GPU, driven by that GPU's {@link CudaBackend}: every
 * collective is enqueued on the backend's stream, so it orders with the rank's kernels and returns
 * before it completes. One thread drives each GPU (and its communicator); the threads of one node
 * call the same collectives in the same order.
 *
 * <p>Bootstrap: {@link #initAll} for every GPU of this JVM ({@code ncclCommInitAll}, one node);
 * {@link #initRank} with a {@link #newUniqueId unique id} that rank 0 made and shared (see
 * {@link Rendezvous}) when the ranks span several JVMs or nodes ({@code ncclCommInitRank}).
 * Tensors must be device tensors of the rank's backend.
 */
public final class NcclCommunicator implements Communicator {
    /** Bytes of an {@code ncclUniqueId}. */
    public static final int UNIQUE_ID_BYTES = 128;

    private final ncclComm comm;
    private final CudaBackend backend;
    private final int rank;
    private final int size;
    private final List<NcclCommunicator> children = new java.util.concurrent.CopyOnWriteArrayList<>();   // its splits
    private final java.util.concurrent.atomic.AtomicBoolean closed = new java.util.concurrent.atomic.AtomicBoolean();

    private NcclCommunicator(ncclComm comm, CudaBackend backend, int rank, int size) {
        this.comm = comm;
        this.backend = backend;
        this.rank = rank;
        this.size = size;
    }

    /**
     * One communicator per backend (each on a distinct GPU of this process), ranks in list order,
     * through {@code ncclCommInitAll}. Call from one thread; then hand each to its GPU's thread.
     */
    public static List<NcclCommunicator> initAll(List<CudaBackend> backends) {
        Loader.load(nccl.class);
        int n = backends.size();
        int[] devices = new int[n];
        for (int i = 0; i < n; i++) {
            devices[i] = backends.get(i).device().index();
        }
        PointerPointer<ncclComm> comms = new PointerPointer<>(n);
        NcclCheck.check(nccl.ncclCommInitAll(comms, n, devices), "ncclCommInitAll", null, n + " devices",
                java.util.Arrays.toString(devices));
        List<NcclCommunicator> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            out.add(new NcclCommunicator(new ncclComm(comms.get(i)), backends.get(i), i, n));
        }
        return out;
    }

    /** A fresh unique id (128 bytes): rank 0 makes it and shares it with the other ranks. */
    public static byte[] newUniqueId() {
        Loader.load(nccl.class);
        ncclUniqueId id = new ncclUniqueId();
        NcclCheck.check(nccl.ncclGetUniqueId(id), "ncclGetUniqueId", null);
        byte[] out = new byte[UNIQUE_ID_BYTES];
        id.internal().get(out);
        return out;
    }

    /**
     * This process's rank of a communicator that spans processes or nodes, through
     * {@code ncclCommInitRank}; blocks until all {@code size} ranks have joined with the same id.
     */
    public static NcclCommunicator initRank(CudaBackend backend, byte[] uniqueId, int rank, int size) {
        if (uniqueId.length != UNIQUE_ID_BYTES) {
            throw new IllegalArgumentException("an ncclUniqueId has " + UNIQUE_ID_BYTES + " bytes, got " + uniqueId.length);
        }
        if (rank < 0 || rank >= size) {
            throw new IllegalArgumentException("rank " + rank + " outside a communicator of " + size);
        }
        Loader.load(nccl.class);
        ncclUniqueId id = new ncclUniqueId();
        id.internal().put(uniqueId);
        backend.device().bind();
        ncclComm comm = new ncclComm();
        NcclCheck.check(nccl.ncclCommInitRank(comm, size, id, rank), "ncclCommInitRank", null, "rank " + rank,
                "size " + size, "device " + backend.device().index());
        return new NcclCommunicator(comm, backend, rank, size);
    }

    @Override
    public int rank() {
        return rank;
    }

    @Override
    public int size() {
        return size;
    }

    /** The backend (GPU and stream) this rank's collectives run on. */
    public CudaBackend backend() {
        return backend;
    }

    /** Refuses a call on a communicator closed or aborted (its native handle is gone). */
    private void requireOpen(String op) {
        if (closed.get()) {
            throw new IllegalStateException("NCCL " + op + " on " + this + ": the communicator was closed or aborted");
        }
    }

    private Pointer ptr(String op, String what, Tensor t) {
        requireOpen(op);
        if (!backend.allocator().owns(t)) {
            throw new IllegalArgumentException("NCCL " + op + ": " + what + " " + t + " is not device memory of "
                    + backend.name());
        }
        t.requireContiguous("NCCL " + op + " " + what);
        return new DevicePointer(CudaAllocator.address(t));
    }

    @Override
    public void allReduceSum(Tensor buf) {
        CommChecks.f32("allReduceSum", "buffer", buf);
        Pointer p = ptr("allReduce", "buffer", buf);
        backend.device().bind();
        NcclCheck.check(nccl.ncclAllReduce(p, p, buf.numel(), nccl.ncclFloat32, nccl.ncclSum, comm,
                backend.stream().handle()), "ncclAllReduce", comm, buf, "rank " + rank + "/" + size);
    }

    @Override
    public void allGather(Tensor send, Tensor recv) {
        if (recv.byteSize() != send.byteSize() * size || recv.dtype() != send.dtype()) {
            throw new IllegalArgumentException("allGather: receive " + recv + " must hold " + size + " × send " + send);
        }
        Pointer s = ptr("allGather", "send", send);
        Pointer r = ptr("allGather", "recv", recv);
        backend.device().bind();
        NcclCheck.check(nccl.ncclAllGather(s, r, send.byteSize(), nccl.ncclUint8, comm, backend.stream().handle()),
                "ncclAllGather", comm, send, recv, "rank " + rank + "/" + size);
    }

    @Override
    public void reduceScatterSum(Tensor send, Tensor recv) {
        CommChecks.f32("reduceScatterSum", "send", send);
        CommChecks.f32("reduceScatterSum", "recv", recv);
        if (send.numel() != recv.numel() * size) {
            throw new IllegalArgumentException("reduceScatterSum: send " + send + " must hold " + size + " × receive " + recv);
        }
        Pointer s = ptr("reduceScatter", "send", send);
        Pointer r = ptr("reduceScatter", "recv", recv);
        backend.device().bind();
        NcclCheck.check(nccl.ncclReduceScatter(s, r, recv.numel(), nccl.ncclFloat32, nccl.ncclSum, comm,
                backend.stream().handle()), "ncclReduceScatter", comm, send, recv, "rank " + rank + "/" + size);
    }

    @Override
    public void broadcast(Tensor buf, int root) {
        if (root < 0 || root >= size) {
            throw new IllegalArgumentException("broadcast: root " + root + " outside a group of " + size);
        }
        Pointer p = ptr("broadcast", "buffer", buf);
        backend.device().bind();
        NcclCheck.check(nccl.ncclBroadcast(p, p, buf.byteSize(), nccl.ncclUint8, root, comm, backend.stream().handle()),
                "ncclBroadcast", comm, buf, "root " + root, "rank " + rank + "/" + size);
    }

    /** Device→host copy of the gathered counts: one synchronising round trip. */
    @Override
    public long[] exchangeCounts(long[] sendCounts) {
        requireOpen("exchangeCounts");
        if (sendCounts.length != size) {
            throw new IllegalArgumentException("exchangeCounts: " + sendCounts.length + " counts for " + size + " ranks");
        }
        Tensor host = Tensor.allocate(Arena.ofAuto(), DType.I64, size);
        for (int p = 0; p < size; p++) {
            host.setLong(sendCounts[p], p);
        }
        Tensor send = backend.toDevice(host, MemoryCategory.COMM_BUFFERS);
        Tensor all = backend.allocator().allocate(MemoryCategory.COMM_BUFFERS, DType.I64, (long) size * size);
        try {
            allGather(send, all);
            Tensor got = backend.toHost(all);   // [size (from), size (to)]
            long[] recv = new long[size];
            for (int p = 0; p < size; p++) {
                recv[p] = got.getLong((long) p * size + rank);
            }
            return recv;
        } finally {
            backend.free(send);
            backend.free(all);
        }
    }

    @Override
    public void allToAll(Tensor send, long[] sendCounts, Tensor recv, long[] recvCounts) {
        String op = "allToAll";
        CommChecks.counts(op, size, sendCounts, recvCounts, send, recv);
        long rowBytes = CommChecks.rowWidth(recv.numel() > 0 ? recv : send) * recv.dtype().bytes();
        long sendBase = CudaAllocator.address(send);
        long recvBase = CudaAllocator.address(recv);
        ptr(op, "send", send);
        ptr(op, "recv", recv);
        backend.device().bind();
        var stream = backend.stream().handle();
        requireOpen(op);
        NcclCheck.check(nccl.ncclGroupStart(), "ncclGroupStart (" + op + ")", comm);
        long sOff = 0;
        long rOff = 0;
        int status = nccl.ncclSuccess;
        String failed = null;
        for (int p = 0; p < size && status == nccl.ncclSuccess; p++) {
            long sb = sendCounts[p] * rowBytes;
            long rb = recvCounts[p] * rowBytes;
            if (sb > 0) {
                status = nccl.ncclSend(new DevicePointer(sendBase + sOff), sb, nccl.ncclUint8, p, comm, stream);
                failed = "ncclSend " + sb + " bytes to rank " + p;
            }
            if (status == nccl.ncclSuccess && rb > 0) {
                status = nccl.ncclRecv(new DevicePointer(recvBase + rOff), rb, nccl.ncclUint8, p, comm, stream);
                failed = "ncclRecv " + rb + " bytes from rank " + p;
            }
            sOff += sb;
            rOff += rb;
        }
        int end = nccl.ncclGroupEnd();
        NcclCheck.check(status, failed == null ? op : failed, comm, "rank " + rank + "/" + size, sendCounts, recvCounts);
        NcclCheck.check(end, "ncclGroupEnd (" + op + ")", comm, "rank " + rank + "/" + size, sendCounts, recvCounts);
    }

    /** {@code ncclCommSplit} with this rank as the key: new ranks follow the order of ranks here. */
    @Override
    public Communicator split(int color) {
        requireOpen("split");
        backend.device().bind();
        ncclComm child = new ncclComm();
        NcclCheck.check(nccl.ncclCommSplit(comm, color, rank, child, null), "ncclCommSplit", comm,
                "color " + color, "rank " + rank + "/" + size);
        int[] r = new int[1];
        int[] n = new int[1];
        NcclCheck.check(nccl.ncclCommUserRank(child, r), "ncclCommUserRank", child);
        NcclCheck.check(nccl.ncclCommCount(child, n), "ncclCommCount", child);
        NcclCommunicator c = new NcclCommunicator(child, backend, r[0], n[0]);
        children.add(c);
        return c;
    }

    /**
     * Aborts this communicator and its splits ({@code ncclCommAbort}): collectives in flight on any rank of it return
     * with an error instead of waiting for a rank that failed. Safe from another thread than the rank's (what
     * {@link NcclRanks} does when a rank throws); the communicator is unusable afterwards, and {@link #close} does nothing.
     */
    public void abort() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        children.forEach(NcclCommunicator::abort);
        backend.device().bind();
        nccl.ncclCommAbort(comm);   // its status is not checked: the communicator is being given up on either way
    }

    /** An all-reduce of one element, then a wait on the stream: every rank has reached this point. */
    @Override
    public void barrier() {
        Tensor one = backend.allocator().allocate(MemoryCategory.COMM_BUFFERS, DType.F32, 1);
        try {
            allReduceSum(one);
            backend.synchronize();
        } finally {
            backend.free(one);
        }
    }

    @Override
    public void close() {
        if (closed.compareAndSet(false, true)) {
            children.forEach(NcclCommunicator::close);
            backend.device().bind();
            NcclCheck.check(nccl.ncclCommDestroy(comm), "ncclCommDestroy", null, "rank " + rank + "/" + size);
        }
    }

    @Override
    public String toString() {
        return "nccl rank " + rank + "/" + size + " on " + backend.name();
    }
}
