package org.orbitrl.daemon.jobs;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.orbitrl.scheduler.job.ComputeBackend;

/** The devices the daemon owns and which job holds each. Not thread-safe: the job manager's lock guards it. */
final class DevicePool {
    private final Map<String, String> holder = new LinkedHashMap<>(); // device -> job, "" when free

    DevicePool(List<String> devices) {
        devices.forEach(d -> holder.put(d, ""));
    }

    /** Devices of a backend the daemon owns. */
    int owned(ComputeBackend backend) {
        return (int) holder.keySet().stream().filter(d -> d.startsWith(prefix(backend))).count();
    }

    /** Free devices of a backend. */
    List<String> free(ComputeBackend backend) {
        List<String> out = new ArrayList<>();
        holder.forEach((d, j) -> {
            if (j.isEmpty() && d.startsWith(prefix(backend))) {
                out.add(d);
            }
        });
        return out;
    }

    /** Gives {@code count} free devices of a backend to a job, or returns an empty list if too few are free. */
    List<String> take(String job, ComputeBackend backend, int count) {
        List<String> free = free(backend);
        if (free.size() < count) {
            return List.of();
        }
        List<String> got = free.subList(0, count);
        got.forEach(d -> holder.put(d, job));
        return List.copyOf(got);
    }

    /** Returns a job's devices to the pool. */
    void release(String job) {
        holder.replaceAll((d, j) -> j.equals(job) ? "" : j);
    }

    /** All devices, in configuration order. */
    List<String> all() {
        return List.copyOf(holder.keySet());
    }

    /** Free devices, in configuration order. */
    List<String> allFree() {
        return holder.entrySet().stream().filter(e -> e.getValue().isEmpty()).map(Map.Entry::getKey).toList();
    }

    static String prefix(ComputeBackend backend) {
        return backend.name().toLowerCase(Locale.ROOT) + ":";
    }
}
