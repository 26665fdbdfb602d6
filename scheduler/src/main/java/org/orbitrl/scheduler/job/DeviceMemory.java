package org.orbitrl.scheduler.job;

import java.util.Collections;
import java.util.EnumMap;
import java.util.Map;
import org.orbitrl.kernels.MemoryCategory;

/**
 * Memory of one device held by one job, by category: what is allocated now, the most that was,
 * and what the plan allowed.
 *
 * @param device  the device id ({@code cuda:0})
 * @param live    bytes allocated now
 * @param peak    the most bytes allocated at once since the job loaded
 * @param planned the planner's budget
 */
public record DeviceMemory(String device, Map<MemoryCategory, Long> live, Map<MemoryCategory, Long> peak,
                           Map<MemoryCategory, Long> planned) {
    public DeviceMemory {
        live = copy(live);
        peak = copy(peak);
        planned = copy(planned);
    }

    private static Map<MemoryCategory, Long> copy(Map<MemoryCategory, Long> m) {
        EnumMap<MemoryCategory, Long> out = new EnumMap<>(MemoryCategory.class);
        out.putAll(m);
        return Collections.unmodifiableMap(out);
    }

    /** Sum of a category map. */
    public static long total(Map<MemoryCategory, Long> bytes) {
        return bytes.values().stream().mapToLong(Long::longValue).sum();
    }
}
