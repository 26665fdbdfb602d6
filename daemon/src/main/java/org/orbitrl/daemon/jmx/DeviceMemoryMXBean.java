package org.orbitrl.daemon.jmx;

import java.util.Map;

/** One device's memory: {@code org.orbitrl:type=Memory,device="cuda:0"}. Bytes by category, summed over its jobs. */
public interface DeviceMemoryMXBean {
    String getDevice();

    /** Jobs holding the device. */
    String[] getJobs();

    /** Bytes allocated now, by category. */
    Map<String, Long> getLive();

    /** Most bytes allocated at once since each job loaded, by category. */
    Map<String, Long> getPeak();

    /** The plans' budgets, by category. */
    Map<String, Long> getPlanned();

    long getLiveBytes();

    long getPeakBytes();

    long getPlannedBytes();
}
