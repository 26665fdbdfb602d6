package org.orbitrl.daemon.jmx;

import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;
import javax.management.AttributeChangeNotification;
import javax.management.MBeanNotificationInfo;
import javax.management.NotificationBroadcasterSupport;
import org.orbitrl.daemon.jobs.Job;
import org.orbitrl.daemon.jobs.JobManager;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.JobFiles;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.StepMetrics;
import org.orbitrl.scheduler.job.TunableKey;

/** The JMX view of one job. */
final class JobBean extends NotificationBroadcasterSupport implements JobMXBean {
    private final Job job;
    private final JobManager manager;
    private final AtomicLong seq;

    JobBean(Job job, JobManager manager, AtomicLong seq) {
        this.job = job;
        this.manager = manager;
        this.seq = seq;
    }

    @Override
    public MBeanNotificationInfo[] getNotificationInfo() {
        return Notifications.info();
    }

    void stateChanged(String from, String to, String reason) {
        AttributeChangeNotification n = new AttributeChangeNotification(this, seq.incrementAndGet(),
                System.currentTimeMillis(), "job " + job.name() + ": " + from + " -> " + to
                + (reason.isEmpty() ? "" : " (" + reason + ")"), "State", String.class.getName(), from, to);
        n.setUserData(job.name());
        sendNotification(n);
    }

    @Override
    public String getName() {
        return job.name();
    }

    @Override
    public String getState() {
        return job.state().name().toLowerCase(java.util.Locale.ROOT);
    }

    @Override
    public String getReason() {
        return job.reason();
    }

    @Override
    public String getLastNotice() {
        return job.lastNotice();
    }

    @Override
    public String getFile() {
        return job.file() == null ? "" : job.file().toString();
    }

    @Override
    public String getSpec() {
        JobSpec s = job.spec();
        return s == null ? "" : JobFiles.toYaml(s);
    }

    @Override
    public String[] getDevices() {
        return job.devices().toArray(String[]::new);
    }

    @Override
    public long getStep() {
        return job.runnerState().step();
    }

    @Override
    public long getTotalSteps() {
        JobSpec s = job.spec();
        return s == null ? 0 : s.steps();
    }

    private StepMetrics step() {
        return job.lastStep();
    }

    @Override
    public double getRewardMean() {
        return step() == null ? Double.NaN : step().rewardMean();
    }

    @Override
    public double getAccuracy() {
        return step() == null ? Double.NaN : step().accuracy();
    }

    @Override
    public double getEvalAccuracy() {
        EvalResult e = job.lastEval();
        return e == null ? Double.NaN : e.accuracy();
    }

    @Override
    public long getEvalStep() {
        EvalResult e = job.lastEval();
        return e == null ? -1 : e.step();
    }

    @Override
    public Map<Integer, Double> getPassAtK() {
        EvalResult e = job.lastEval();
        return e == null ? Map.of() : new TreeMap<>(e.passAtK());
    }

    @Override
    public double getLogprobGapMean() {
        return step() == null ? Double.NaN : step().logprobGapMean();
    }

    @Override
    public double getLogprobGapMax() {
        return step() == null ? Double.NaN : step().logprobGapMax();
    }

    @Override
    public double getTokensPerSecond() {
        return step() == null ? Double.NaN : step().tokensPerSecond();
    }

    @Override
    public double getStepTimeSeconds() {
        return step() == null ? Double.NaN : step().stepSeconds();
    }

    @Override
    public double getEtaSeconds() {
        return job.etaSeconds();
    }

    @Override
    public long getAdapterVersion() {
        return job.runnerState().adapterVersion();
    }

    @Override
    public double getStaleness() {
        return step() == null ? Double.NaN : step().stalenessMean();
    }

    @Override
    public long getStalenessMax() {
        return step() == null ? 0 : step().stalenessMax();
    }

    @Override
    public long getDroppedStaleSamples() {
        return step() == null ? 0 : step().droppedStale();
    }

    @Override
    public long getConsumedIndex() {
        return job.runnerState().consumedIndex();
    }

    @Override
    public long getSamplesTrained() {
        return job.runnerState().samplesTrained();
    }

    @Override
    public long getLastCheckpointStep() {
        return job.lastCheckpointStep();
    }

    @Override
    public String getLastCheckpointFile() {
        return job.lastCheckpointFile();
    }

    @Override
    public Map<String, Double> getGauges() {
        return new TreeMap<>(job.gauges());
    }

    @Override
    public Map<String, Double> getStepMetrics() {
        return step() == null ? Map.of() : new TreeMap<>(step().extra());
    }

    private JobSpec spec() {
        JobSpec s = job.spec();
        if (s == null) {
            throw new IllegalStateException("job " + job.name() + " has no valid job file");
        }
        return s;
    }

    @Override
    public double getLearningRate() {
        return job.spec() == null ? Double.NaN : spec().optimizer().lr();
    }

    @Override
    public void setLearningRate(double lr) {
        manager.set(job.name(), TunableKey.LEARNING_RATE.path(), Double.toString(lr));
    }

    @Override
    public double getTemperature() {
        return job.spec() == null ? Double.NaN : spec().sampling().temperature();
    }

    @Override
    public void setTemperature(double t) {
        manager.set(job.name(), TunableKey.TEMPERATURE.path(), Double.toString(t));
    }

    @Override
    public int getStalenessBound() {
        return job.spec() == null ? -1 : spec().async().stalenessBound();
    }

    @Override
    public void setStalenessBound(int k) {
        manager.set(job.name(), TunableKey.STALENESS_BOUND.path(), Integer.toString(k));
    }

    @Override
    public int getEvalInterval() {
        return job.spec() == null ? -1 : spec().eval().interval();
    }

    @Override
    public void setEvalInterval(int steps) {
        manager.set(job.name(), TunableKey.EVAL_INTERVAL.path(), Integer.toString(steps));
    }

    @Override
    public void pause() {
        manager.pause(job.name());
    }

    @Override
    public void resume() {
        manager.resume(job.name());
    }

    @Override
    public void stop() {
        manager.stop(job.name());
    }

    @Override
    public void checkpointNow() {
        manager.checkpointNow(job.name());
    }

    @Override
    public String set(String key, String value) {
        TunableKey k = TunableKey.parse(key);
        JobSpec s = manager.set(job.name(), key, value);
        return k.path() + " = " + switch (k) {
            case LEARNING_RATE -> Double.toString(s.optimizer().lr());
            case TEMPERATURE -> Double.toString(s.sampling().temperature());
            case STALENESS_BOUND -> Integer.toString(s.async().stalenessBound());
            case EVAL_INTERVAL -> Integer.toString(s.eval().interval());
        };
    }
}
