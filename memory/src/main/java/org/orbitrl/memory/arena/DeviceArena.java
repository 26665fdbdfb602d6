package org.orbitrl.memory.arena;

import java.lang.foreign.MemorySegment;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.Map;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.memory.plan.GpuRole;
import org.orbitrl.memory.plan.MemoryPlan;

/**
 * Every allocation on one device goes through here: each is tagged with its
 * {@link MemoryCategory} and the job (scope) that owns it, live and peak bytes are tracked per
 * category, and an allocation that would take a category past its planned budget is refused with
 * an {@link AllocationRefusedException} naming the category, before the device itself runs out.
 *
 * <p>Lifetimes: {@link #allocate} on the arena itself is for memory that lives as long as the
 * arena (the frozen base weights the daemon loads once); a job allocates through the
 * {@link JobScope} from {@link #openJob}, and everything it holds is freed when that scope closes
 * (its step-lifetime buffers can live in nested scopes). Closing the arena frees what is left.
 * Methods are synchronized: allocation is not on a hot path (buffers are planned and reused).
 */
public final class DeviceArena implements TensorAllocator, AutoCloseable {
    private final DeviceMemory memory;
    private final ArenaBudget budget;
    private final GpuRole role;
    private final JobScope root;
    private final java.util.List<JobScope> jobs = new java.util.ArrayList<>();
    private final EnumMap<MemoryCategory, long[]> usage = new EnumMap<>(MemoryCategory.class);   // {live, peak}
    private final Map<String, EnumMap<MemoryCategory, Long>> liveByJob = new HashMap<>();
    private long liveTotal;
    private long peakTotal;
    private boolean closed;

    /** An arena over {@code memory} enforcing {@code budget}; {@code role} is the plan column {@link #compare} reads. */
    public DeviceArena(DeviceMemory memory, ArenaBudget budget, GpuRole role) {
        this.memory = memory;
        this.budget = budget;
        this.role = role;
        for (MemoryCategory c : MemoryCategory.values()) {
            usage.put(c, new long[2]);
        }
        this.root = new JobScope(this, "arena", null);
    }

    /** An arena enforcing the plan's budget for a GPU of {@code role}. */
    public static DeviceArena forPlan(DeviceMemory memory, MemoryPlan plan, GpuRole role) {
        return new DeviceArena(memory, ArenaBudget.of(plan, role), role);
    }

    /** A zero-filled tensor that lives until the arena closes (base weights). */
    @Override
    public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
        return root.allocate(category, dtype, shape);
    }

    /** A scope for job {@code jobId}: closing it frees everything allocated through it. */
    public synchronized JobScope openJob(String jobId) {
        checkOpen();
        if (jobId == null || jobId.isBlank()) {
            throw new IllegalArgumentException("a job scope needs a job id");
        }
        JobScope s = new JobScope(this, jobId, null);
        jobs.add(s);
        return s;
    }

    synchronized void closed(JobScope scope) {
        jobs.remove(scope);
    }

    // ---------------------------------------------------------------- accounting (called by scopes)

    synchronized Allocation reserve(JobScope scope, MemoryCategory category, long bytes) {
        checkOpen();
        long size = roundUp(Math.max(1, bytes));
        long[] u = usage.get(category);
        long limit = budget.limit(category);
        if (size > limit - u[0]) {
            throw new AllocationRefusedException(memory.name(), scope.job(), category, size, limit, u[0], false);
        }
        if (size > memory.capacity() - liveTotal) {
            throw new AllocationRefusedException(memory.name(), scope.job(), category, size, memory.capacity(), liveTotal,
                    true);
        }
        MemorySegment seg = memory.allocate(size);
        u[0] += size;
        u[1] = Math.max(u[1], u[0]);
        liveTotal += size;
        peakTotal = Math.max(peakTotal, liveTotal);
        liveByJob.computeIfAbsent(scope.job(), k -> new EnumMap<>(MemoryCategory.class)).merge(category, size, Long::sum);
        return new Allocation(seg, category, size);
    }

    synchronized void release(JobScope scope, Allocation a) {
        memory.free(a.segment());
        usage.get(a.category())[0] -= a.bytes();
        liveTotal -= a.bytes();
        EnumMap<MemoryCategory, Long> j = liveByJob.get(scope.job());
        long left = j.merge(a.category(), -a.bytes(), Long::sum);
        if (left == 0) {
            j.remove(a.category());
        }
        if (j.isEmpty()) {
            liveByJob.remove(scope.job());
        }
    }

    private long roundUp(long bytes) {
        long al = memory.alignment();
        return (bytes + al - 1) / al * al;
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("the arena of " + memory.name() + " is closed");
        }
    }

    // ---------------------------------------------------------------- reporting

    /** Bytes category {@code c} holds now. */
    public synchronized long live(MemoryCategory c) {
        return usage.get(c)[0];
    }

    /** The most bytes category {@code c} has held at once. */
    public synchronized long peak(MemoryCategory c) {
        return usage.get(c)[1];
    }

    /** Bytes job {@code job} holds now in category {@code c}. */
    public synchronized long live(String job, MemoryCategory c) {
        EnumMap<MemoryCategory, Long> j = liveByJob.get(job);
        return j == null ? 0 : j.getOrDefault(c, 0L);
    }

    /** Bytes job {@code job} holds now, all categories. */
    public synchronized long liveOfJob(String job) {
        EnumMap<MemoryCategory, Long> j = liveByJob.get(job);
        return j == null ? 0 : j.values().stream().mapToLong(Long::longValue).sum();
    }

    /** Bytes held now, all categories. */
    public synchronized long liveTotal() {
        return liveTotal;
    }

    /** The most bytes held at once. */
    public synchronized long peakTotal() {
        return peakTotal;
    }

    /** Live and peak bytes of every category. */
    public synchronized Map<MemoryCategory, CategoryUsage> usage() {
        EnumMap<MemoryCategory, CategoryUsage> m = new EnumMap<>(MemoryCategory.class);
        usage.forEach((c, u) -> m.put(c, new CategoryUsage(u[0], u[1])));
        return m;
    }

    /** The budget this arena enforces. */
    public ArenaBudget budget() {
        return budget;
    }

    /** Predicted (the plan, for this arena's role) against measured peak and live bytes, per category. */
    public synchronized PlanComparison compare(MemoryPlan plan) {
        return PlanComparison.of(plan.budget(role), usage());
    }

    /** Frees everything still allocated, in every scope. */
    @Override
    public void close() {
        JobScope[] open;
        synchronized (this) {
            if (closed) {
                return;
            }
            open = jobs.toArray(JobScope[]::new);
        }
        for (JobScope s : open) {
            s.close();
        }
        root.close();
        synchronized (this) {
            closed = true;
        }
    }

    /** One live allocation. */
    record Allocation(MemorySegment segment, MemoryCategory category, long bytes) {
    }
}
