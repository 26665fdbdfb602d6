package org.orbitrl.daemon.jmx;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import org.orbitrl.daemon.jobs.Job;
import org.orbitrl.daemon.jobs.JobManager;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.scheduler.job.DeviceMemory;

/** The JMX view of one device's memory, summed over the jobs that hold it. */
final class DeviceMemoryBean implements DeviceMemoryMXBean {
    private final String device;
    private final JobManager manager;

    DeviceMemoryBean(String device, JobManager manager) {
        this.device = device;
        this.manager = manager;
    }

    @Override
    public String getDevice() {
        return device;
    }

    private List<Job> holders() {
        return manager.jobs().stream().filter(j -> j.devices().contains(device)).toList();
    }

    @Override
    public String[] getJobs() {
        return holders().stream().map(Job::name).toArray(String[]::new);
    }

    private Map<String, Long> sum(Function<DeviceMemory, Map<MemoryCategory, Long>> which) {
        EnumMap<MemoryCategory, Long> total = new EnumMap<>(MemoryCategory.class);
        for (MemoryCategory c : MemoryCategory.values()) {
            total.put(c, 0L);
        }
        List<DeviceMemory> all = new ArrayList<>();
        holders().forEach(j -> all.addAll(j.memory()));
        for (DeviceMemory m : all) {
            if (m.device().equals(device)) {
                which.apply(m).forEach((c, b) -> total.merge(c, b, Long::sum));
            }
        }
        Map<String, Long> out = new LinkedHashMap<>();
        total.forEach((c, b) -> out.put(c.name().toLowerCase(java.util.Locale.ROOT), b));
        return out;
    }

    @Override
    public Map<String, Long> getLive() {
        return sum(DeviceMemory::live);
    }

    @Override
    public Map<String, Long> getPeak() {
        return sum(DeviceMemory::peak);
    }

    @Override
    public Map<String, Long> getPlanned() {
        return sum(DeviceMemory::planned);
    }

    @Override
    public long getLiveBytes() {
        return getLive().values().stream().mapToLong(Long::longValue).sum();
    }

    @Override
    public long getPeakBytes() {
        return getPeak().values().stream().mapToLong(Long::longValue).sum();
    }

    @Override
    public long getPlannedBytes() {
        return getPlanned().values().stream().mapToLong(Long::longValue).sum();
    }
}
