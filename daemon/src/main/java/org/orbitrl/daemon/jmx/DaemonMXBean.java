package org.orbitrl.daemon.jmx;

import java.util.List;

/** The daemon: {@code org.orbitrl:type=Daemon}. Emits a notification for every job state change, failure and notice. */
public interface DaemonMXBean {
    /** Orbit's version. */
    String getVersion();

    /** Seconds since the daemon started. */
    long getUptimeSeconds();

    /** When the daemon started (ISO-8601). */
    String getStartTime();

    /** Process id of the daemon. */
    long getPid();

    /** Devices the daemon owns. */
    String[] getDevices();

    /** Devices no job holds. */
    String[] getFreeDevices();

    /** Every job the daemon knows, in the order first seen. */
    List<JobSummary> getJobs();

    /** The data directory. */
    String getDataDir();

    /** The watched jobs folder. */
    String getJobsDir();

    /** Why the data directory cannot be written (jobs fail with it), empty when it can. */
    String getDataDirProblem();

    /** Whether remote JMX is open. */
    boolean isRemoteJmxEnabled();

    /** Reads the jobs folder now instead of waiting for the next event or rescan. */
    void rescan();
}
