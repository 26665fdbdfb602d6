package org.orbitrl.memory.arena;

import java.util.ArrayList;
import java.util.List;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * The allocations of one job (or of a shorter-lived part of it, see {@link #openScope}), all
 * freed together when the scope closes: a job's teardown is closing its scope. After that the
 * scope refuses to allocate, and on the host its tensors can no longer be read or written.
 */
public final class JobScope implements TensorAllocator, AutoCloseable {
    private final DeviceArena arena;
    private final String job;
    private final JobScope parent;
    private final List<DeviceArena.Allocation> allocations = new ArrayList<>();
    private final List<JobScope> children = new ArrayList<>();
    private boolean closed;

    JobScope(DeviceArena arena, String job, JobScope parent) {
        this.arena = arena;
        this.job = job;
        this.parent = parent;
    }

    /** The job this scope belongs to. */
    public String job() {
        return job;
    }

    /** A zero-filled contiguous tensor owned by this scope. */
    @Override
    public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
        long n = 1;
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("negative dimension in shape " + java.util.Arrays.toString(shape));
            }
            n = Math.multiplyExact(n, d);
        }
        long bytes = Math.multiplyExact(n, (long) dtype.bytes());
        synchronized (this) {
            if (closed) {
                throw new IllegalStateException("job scope " + job + " is closed");
            }
            DeviceArena.Allocation a = arena.reserve(this, category, bytes);
            allocations.add(a);
            return Tensor.wrap(a.segment(), dtype, shape);
        }
    }

    /** A nested scope of the same job (e.g. one step's buffers), closed with this one at the latest. */
    public synchronized JobScope openScope() {
        if (closed) {
            throw new IllegalStateException("job scope " + job + " is closed");
        }
        JobScope c = new JobScope(arena, job, this);
        children.add(c);
        return c;
    }

    /** Bytes this scope (not its children) holds. */
    public synchronized long liveBytes() {
        return allocations.stream().mapToLong(DeviceArena.Allocation::bytes).sum();
    }

    /** Frees every allocation of this scope and its nested scopes. Idempotent. */
    @Override
    public void close() {
        List<JobScope> kids;
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            kids = new ArrayList<>(children);
        }
        for (JobScope c : kids) {
            c.close();
        }
        synchronized (this) {
            for (int i = allocations.size() - 1; i >= 0; i--) {
                arena.release(this, allocations.get(i));
            }
            allocations.clear();
        }
        if (parent != null) {
            synchronized (parent) {
                parent.children.remove(this);
            }
        } else {
            arena.closed(this);
        }
    }
}
