package org.orbitrl.memory.plan;

import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.orbitrl.kernels.MemoryCategory;

/**
 * The planned bytes of one GPU of a role, by category, against its capacity.
 *
 * @param role     what the GPU does
 * @param gpus     GPUs in the node with this role
 * @param bytes    planned bytes per category, in {@link #ALLOCATION_ORDER}
 * @param capacity memory of the GPU
 */
public record GpuBudget(GpuRole role, int gpus, Map<MemoryCategory, Long> bytes, long capacity) {

    /**
     * The order a job's memory is taken in when it starts: runtime, base, dequantization buffers,
     * adapter state, communication, then the per-step buffers. The category at which a plan
     * first runs past the capacity in this order is the one reported as overflowing: it is the
     * allocation that would fail.
     */
    public static final List<MemoryCategory> ALLOCATION_ORDER = List.of(MemoryCategory.RUNTIME_RESERVE,
            MemoryCategory.BASE_WEIGHTS, MemoryCategory.DEQUANT_BUFFERS, MemoryCategory.ADAPTER_PARAMS,
            MemoryCategory.ADAPTER_GRADS, MemoryCategory.OPTIMIZER_STATE, MemoryCategory.COMM_BUFFERS,
            MemoryCategory.KV_CACHE, MemoryCategory.LOGITS, MemoryCategory.ACTIVATIONS);

    public GpuBudget {
        Map<MemoryCategory, Long> m = new LinkedHashMap<>();
        for (MemoryCategory c : ALLOCATION_ORDER) {
            long v = bytes.getOrDefault(c, 0L);
            if (v < 0) {
                throw new IllegalArgumentException(c + " has negative planned bytes " + v);
            }
            m.put(c, v);
        }
        bytes = Collections.unmodifiableMap(m);
    }

    /** Planned bytes of one category. */
    public long get(MemoryCategory c) {
        return bytes.getOrDefault(c, 0L);
    }

    /** All planned bytes. */
    public long total() {
        return bytes.values().stream().mapToLong(Long::longValue).sum();
    }

    /** Capacity minus the plan; negative when it does not fit. */
    public long headroom() {
        return capacity - total();
    }

    public boolean fits() {
        return headroom() >= 0;
    }

    /** The first category, in allocation order, at which the running total passes the capacity; null if it fits. */
    public MemoryCategory overflowCategory() {
        long run = 0;
        for (MemoryCategory c : ALLOCATION_ORDER) {
            run += get(c);
            if (run > capacity) {
                return c;
            }
        }
        return null;
    }

    /** Bytes left for category {@code c} when the categories before it in allocation order are in place. */
    public long leftFor(MemoryCategory c) {
        long run = 0;
        for (MemoryCategory x : ALLOCATION_ORDER) {
            if (x == c) {
                return capacity - run;
            }
            run += get(x);
        }
        throw new IllegalArgumentException(c + " is not a planned category");
    }
}
