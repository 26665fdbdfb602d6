package org.orbitrl.daemon.jmx;

import java.time.Instant;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;
import javax.management.AttributeChangeNotification;
import javax.management.MBeanNotificationInfo;
import javax.management.Notification;
import javax.management.NotificationBroadcasterSupport;
import org.orbitrl.daemon.Version;
import org.orbitrl.daemon.jobs.Job;
import org.orbitrl.daemon.jobs.JobManager;
import org.orbitrl.daemon.jobs.JobState;

/** The JMX view of the daemon, and the one place every job's notifications can be heard. */
final class DaemonBean extends NotificationBroadcasterSupport implements DaemonMXBean {
    private final JobManager manager;
    private final Runnable rescan;
    private final String dataDirProblem;
    private final boolean remote;
    private final Instant started = Instant.now();
    private final long startedNanos = System.nanoTime();
    private final AtomicLong seq;

    DaemonBean(JobManager manager, Runnable rescan, String dataDirProblem, boolean remote, AtomicLong seq) {
        this.manager = manager;
        this.rescan = rescan;
        this.dataDirProblem = dataDirProblem == null ? "" : dataDirProblem;
        this.remote = remote;
        this.seq = seq;
    }

    @Override
    public MBeanNotificationInfo[] getNotificationInfo() {
        return Notifications.info();
    }

    void stateChanged(Job job, JobState from, JobState to, String reason) {
        String f = from.name().toLowerCase(Locale.ROOT);
        String t = to.name().toLowerCase(Locale.ROOT);
        AttributeChangeNotification n = new AttributeChangeNotification(this, seq.incrementAndGet(),
                System.currentTimeMillis(), "job " + job.name() + ": " + f + " -> " + t
                + (reason.isEmpty() ? "" : " (" + reason + ")"), "State", String.class.getName(), f, t);
        n.setUserData(job.name());
        sendNotification(n);
        if (to == JobState.FAILED) {
            notice(job.name(), Notifications.FAILED, "job " + job.name() + " failed: " + reason);
        }
    }

    void notice(String job, String type, String message) {
        Notification n = new Notification(type, this, seq.incrementAndGet(), System.currentTimeMillis(), message);
        n.setUserData(job);
        sendNotification(n);
    }

    @Override
    public String getVersion() {
        return Version.VERSION;
    }

    @Override
    public long getUptimeSeconds() {
        return (System.nanoTime() - startedNanos) / 1_000_000_000L;
    }

    @Override
    public String getStartTime() {
        return started.toString();
    }

    @Override
    public long getPid() {
        return ProcessHandle.current().pid();
    }

    @Override
    public String[] getDevices() {
        return manager.devices().toArray(String[]::new);
    }

    @Override
    public String[] getFreeDevices() {
        return manager.freeDevices().toArray(String[]::new);
    }

    @Override
    public List<JobSummary> getJobs() {
        return manager.jobs().stream().map(DaemonBean::summary).toList();
    }

    static JobSummary summary(Job j) {
        var spec = j.spec();
        return new JobSummary(j.name(), j.state().name().toLowerCase(Locale.ROOT), j.reason(), j.runnerState().step(),
                spec == null ? 0 : spec.steps(), j.lastStep() == null ? Double.NaN : j.lastStep().rewardMean(),
                j.lastEval() == null ? Double.NaN : j.lastEval().accuracy(), j.runnerState().adapterVersion(),
                String.join(",", j.devices()));
    }

    @Override
    public String getDataDir() {
        return manager.config().dataDir().toString();
    }

    @Override
    public String getJobsDir() {
        return manager.config().jobsDir().toString();
    }

    @Override
    public String getDataDirProblem() {
        return dataDirProblem;
    }

    @Override
    public boolean isRemoteJmxEnabled() {
        return remote;
    }

    @Override
    public void rescan() {
        rescan.run();
    }
}
