package org.orbitrl.kernels.comm;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * A logical rank whose tensors live in a device backend's memory: every collective copies its operands to the host,
 * runs the host communicator's collective there ({@link LocalGroup}'s: sums in rank order), and copies the results
 * back. Several such ranks, each with its own backend on one GPU, run the parallel model's device paths (the exchanged
 * rows, ids and index tensors in device memory) where NCCL cannot, since NCCL takes one rank per GPU: for tests and
 * functional runs on one GPU, not for speed.
 */
public final class HostStagedRanks implements Communicator {
    private final Communicator host;
    private final Backend backend;

    public HostStagedRanks(Communicator host, Backend backend) {
        this.host = host;
        this.backend = backend;
    }

    private Tensor out(Tensor t) {
        Tensor copy = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), t.dtype(), t.shape());
        if (t.numel() > 0) {
            copy.copyFrom(backend.allocator().toHost(t));
        }
        return copy;
    }

    private void in(Tensor hostResult, Tensor dst) {
        if (dst.numel() > 0) {
            TensorAllocator a = backend.allocator();
            a.copy(hostResult, dst);
        }
    }

    @Override
    public int rank() {
        return host.rank();
    }

    @Override
    public int size() {
        return host.size();
    }

    @Override
    public void allReduceSum(Tensor buf) {
        Tensor h = out(buf);
        host.allReduceSum(h);
        in(h, buf);
    }

    @Override
    public void allGather(Tensor send, Tensor recv) {
        Tensor r = out(recv);
        host.allGather(out(send), r);
        in(r, recv);
    }

    @Override
    public void reduceScatterSum(Tensor send, Tensor recv) {
        Tensor r = out(recv);
        host.reduceScatterSum(out(send), r);
        in(r, recv);
    }

    @Override
    public void broadcast(Tensor buf, int root) {
        Tensor h = out(buf);
        host.broadcast(h, root);
        in(h, buf);
    }

    @Override
    public long[] exchangeCounts(long[] sendCounts) {
        return host.exchangeCounts(sendCounts);
    }

    @Override
    public void allToAll(Tensor send, long[] sendCounts, Tensor recv, long[] recvCounts) {
        Tensor r = out(recv);
        host.allToAll(out(send), sendCounts, r, recvCounts);
        in(r, recv);
    }

    @Override
    public Communicator split(int color) {
        return new HostStagedRanks(host.split(color), backend);
    }

    @Override
    public void barrier() {
        host.barrier();
    }

    @Override
    public void close() {
        host.close();
    }
}
