package org.orbitrl.scheduler.job;

import java.util.Collections;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.Map;
import org.orbitrl.kernels.MemoryCategory;

/**
 * The memory plan of a job on the devices it was given, accepted by the planner.
 *
 * @param bytes per device id, bytes by category
 * @param table the plan as a table for people (logged when the job loads)
 */
public record JobPlan(Map<String, Map<MemoryCategory, Long>> bytes, String table) {
    public JobPlan {
        Map<String, Map<MemoryCategory, Long>> copy = new LinkedHashMap<>();
        bytes.forEach((device, m) -> copy.put(device, Collections.unmodifiableMap(new EnumMap<>(m))));
        bytes = Collections.unmodifiableMap(copy);
    }
}
