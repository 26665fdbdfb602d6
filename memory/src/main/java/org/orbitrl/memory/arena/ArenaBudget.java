package org.orbitrl.memory.arena;

import java.util.EnumMap;
import java.util.Map;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.memory.plan.GpuRole;
import org.orbitrl.memory.plan.MemoryPlan;

/**
 * The bytes each category may hold at once on one device. A category absent from the map may
 * hold nothing.
 *
 * @param limits bytes per category
 */
public record ArenaBudget(Map<MemoryCategory, Long> limits) {

    public ArenaBudget {
        EnumMap<MemoryCategory, Long> m = new EnumMap<>(MemoryCategory.class);
        for (var e : limits.entrySet()) {
            if (e.getValue() == null || e.getValue() < 0) {
                throw new IllegalArgumentException("budget of " + e.getKey() + " must be non-negative, got " + e.getValue());
            }
            m.put(e.getKey(), e.getValue());
        }
        limits = Map.copyOf(m);
    }

    /** The plan's per-GPU bytes for {@code role}. */
    public static ArenaBudget of(MemoryPlan plan, GpuRole role) {
        return new ArenaBudget(plan.budget(role).bytes());
    }

    /** No category limit; only the device's capacity applies (tools and tests). */
    public static ArenaBudget unlimited() {
        EnumMap<MemoryCategory, Long> m = new EnumMap<>(MemoryCategory.class);
        for (MemoryCategory c : MemoryCategory.values()) {
            m.put(c, Long.MAX_VALUE);
        }
        return new ArenaBudget(m);
    }

    /** Bytes category {@code c} may hold. */
    public long limit(MemoryCategory c) {
        return limits.getOrDefault(c, 0L);
    }
}
