package org.orbitrl.daemon.jobs;

import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CopyOnWriteArrayList;
import org.orbitrl.daemon.config.OrbitConfig;
import org.orbitrl.daemon.state.JobRecord;
import org.orbitrl.daemon.state.StateStore;
import org.orbitrl.scheduler.job.ComputeBackend;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobRunnerProvider;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.TunableKey;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The registry of jobs, the queue, and the control surface JMX calls. Jobs start in FIFO order
 * per backend when enough devices of their backend are free; a job that needs more devices than
 * the daemon owns fails at once. Every state change is persisted and reported to listeners.
 */
public final class JobManager {
    private static final Logger LOG = LoggerFactory.getLogger(JobManager.class);

    private final OrbitConfig config;
    private final StateStore store;
    private final Map<String, JobRunnerProvider> runners;
    private final String dataDirProblem;
    private final Map<String, Job> jobs = new LinkedHashMap<>();
    private final Map<String, Thread> threads = new HashMap<>();
    private final DevicePool devices;
    private final List<JobListener> listeners = new CopyOnWriteArrayList<>();
    private long seq;
    private long accepted;
    private boolean scheduling;
    private boolean shuttingDown;

    /**
     * @param dataDirProblem why the data directory cannot be written, or {@code null} when it can;
     *                       every job then fails with it while the daemon keeps serving
     */
    public JobManager(OrbitConfig config, StateStore store, Map<String, JobRunnerProvider> runners, String dataDirProblem) {
        this.config = config;
        this.store = store;
        this.runners = Map.copyOf(runners);
        this.dataDirProblem = dataDirProblem;
        this.devices = new DevicePool(config.devices());
    }

    public void addListener(JobListener l) {
        listeners.add(l);
    }

    public OrbitConfig config() {
        return config;
    }

    /** Jobs in the order the daemon first accepted them (across restarts). */
    public synchronized List<Job> jobs() {
        return List.copyOf(jobs.values());
    }

    public synchronized Optional<Job> job(String name) {
        return Optional.ofNullable(jobs.get(name));
    }

    /** Devices the daemon owns. */
    public synchronized List<String> devices() {
        return devices.all();
    }

    /** Devices no job holds. */
    public synchronized List<String> freeDevices() {
        return devices.allFree();
    }

    /**
     * Restores jobs from the state map, in the order they were first accepted (records of version 1, which do not
     * say, first and by name): unfinished ones are queued again, in that order, to resume from their checkpoints
     * once their runner's check passes.
     */
    public void restore() {
        List<Job> unfinished = new ArrayList<>();
        synchronized (this) {
            List<JobRecord> records = new ArrayList<>(store.all());
            records.sort(Comparator.comparingLong(JobRecord::seq).thenComparing(JobRecord::name));
            for (JobRecord r : records) {
                Job job = JobRecords.toJob(r);
                accepted = Math.max(accepted, job.acceptedSeq);
                jobs.put(job.name(), job);
                listeners.forEach(l -> l.added(job));
                if (job.state == JobState.QUEUED) {
                    unfinished.add(job);
                }
            }
        }
        for (Job job : unfinished) {
            String problem = acceptanceProblem(job); // reads files: outside the lock
            synchronized (this) {
                if (job.state != JobState.QUEUED) {
                    continue;
                }
                if (problem != null) {
                    transition(job, JobState.FAILED, problem);
                } else {
                    job.queuedSeq = seq++;
                }
            }
        }
    }

    // ---------------------------------------------------------------- control (JMX, orbitctl)

    /** Pauses a job after its current step (a queued job is paused as soon as it has loaded). */
    public void pause(String name) {
        Job job = require(name);
        synchronized (this) {
            if (job.state.terminal()) {
                throw new IllegalStateException("job " + name + " is " + lower(job.state) + "; there is nothing to pause");
            }
            job.pausedByUser = true;
            persist(job);
        }
        job.wake();
    }

    /**
     * Resumes a paused job; a stopped or failed job is queued again and resumes from its last checkpoint (or fails
     * at once, with the reason, if its runner's check of its files fails).
     */
    public void resume(String name) {
        Job job = require(name);
        boolean queue;
        synchronized (this) {
            if (job.state == JobState.COMPLETED) {
                throw new IllegalStateException("job " + name + " has completed; rename its file to run it again");
            }
            job.pausedByUser = false;
            queue = job.state == JobState.STOPPED || job.state == JobState.FAILED;
            if (queue && job.spec == null) {
                throw new IllegalStateException("job " + name + " has no valid job file: " + job.reason);
            }
            persist(job);
        }
        if (queue) {
            requeue(job, "resumed by request");
        }
        job.wake();
    }

    /** Stops a job after a checkpoint. */
    public void stop(String name) {
        stop(require(name), StopKind.USER);
    }

    /** Checkpoints a job at its next step boundary (at once if paused). */
    public void checkpointNow(String name) {
        Job job = require(name);
        if (job.state != JobState.RUNNING && job.state != JobState.PAUSED) {
            throw new IllegalStateException("job " + name + " is " + lower(job.state) + "; only a running or paused job"
                    + " can checkpoint");
        }
        job.requestCheckpoint();
    }

    /**
     * Sets a live-tunable field ({@code optimizer.lr}, {@code sampling.temperature},
     * {@code async.staleness_bound}, {@code eval.interval} or their short names); validated.
     *
     * @return the job's spec with the new value
     */
    public JobSpec set(String name, String key, String value) {
        Job job = require(name);
        TunableKey k = TunableKey.parse(key);
        synchronized (this) {
            if (job.spec == null) {
                throw new IllegalStateException("job " + name + " has no valid job file");
            }
            JobSpec next = k.apply(job.spec, value);
            job.spec = next;
            persist(job);
            LOG.info("job {}: {} set to {}", name, k.path(), value.strip());
        }
        job.tunablesChanged();
        return job.spec;
    }

    // ---------------------------------------------------------------- lifecycle (package)

    Job require(String name) {
        Job job;
        synchronized (this) {
            job = jobs.get(name);
        }
        if (job == null) {
            throw new IllegalArgumentException("no job named '" + name + "'");
        }
        return job;
    }

    synchronized Job register(String name) {
        Job job = new Job(name);
        job.acceptedSeq = ++accepted;
        jobs.put(name, job);
        listeners.forEach(l -> l.added(job));
        return job;
    }

    synchronized void forget(Job job) {
        jobs.remove(job.name());
        store.remove(job.name());
        listeners.forEach(l -> l.removed(job));
    }

    void stop(Job job, StopKind kind) {
        synchronized (this) {
            if (job.state.terminal()) {
                if (kind == StopKind.USER) {
                    throw new IllegalStateException("job " + job.name() + " is already " + lower(job.state));
                }
                return;
            }
            if (job.state == JobState.QUEUED) {
                transition(job, JobState.STOPPED, kind.reason);
                return;
            }
        }
        job.requestStop(kind);
    }

    /**
     * Queues a job (new, or resuming after a stop or failure) once its runner's check of its files passes; fails it
     * at once, with the check's reason, otherwise.
     */
    void requeue(Job job, String why) {
        String problem = acceptanceProblem(job); // reads the model's files: outside the lock, so JMX keeps answering
        synchronized (this) {
            if (problem != null) {
                transition(job, JobState.FAILED, problem);
                return;
            }
            if (job.state != JobState.QUEUED) {
                transition(job, JobState.QUEUED, why);
            }
            job.queuedSeq = seq++;
            job.resetRequests();
            schedule();
        }
    }

    /** The file of a job that has not started changed: a queued job is checked again, keeping its place, or fails. */
    void fileReplaced(Job job) {
        String problem = job.state == JobState.QUEUED ? acceptanceProblem(job) : null;
        synchronized (this) {
            if (problem != null && job.state == JobState.QUEUED) {
                transition(job, JobState.FAILED, problem);
            } else {
                persist(job);
            }
        }
    }

    /**
     * Why a job cannot run, as its runner finds before it has devices (its model's files cannot be read, say), or
     * null. A job whose runner is not installed, and every job of a daemon whose data directory cannot be written,
     * is failed by the scheduler with that reason instead.
     */
    private String acceptanceProblem(Job job) {
        JobSpec spec = job.spec;
        JobRunnerProvider provider = spec == null ? null : runners.get(spec.runner());
        if (provider == null || dataDirProblem != null) {
            return null;
        }
        try {
            provider.check(spec);
            return null;
        } catch (JobException e) {
            return FailureReason.of(e);
        } catch (RuntimeException e) { // NOPMD: a runner's faulty check fails its job, never the daemon
            LOG.error("job {}: checking it failed", job.name(), e);
            return FailureReason.of(e);
        }
    }

    /** Moves a job to a new state, persists it and tells listeners. */
    synchronized void transition(Job job, JobState to, String reason) {
        JobState from = job.state;
        if (from == to && job.reason.equals(reason)) {
            return;
        }
        if (from != to && !from.canMoveTo(to)) {
            throw new IllegalStateException("job " + job.name() + " cannot move from " + from + " to " + to);
        }
        job.state = to;
        job.reason = reason == null ? "" : reason;
        if (!to.holdsDevices()) {
            devices.release(job.name());
            job.devices = List.of();
        }
        persist(job);
        String text = "job " + job.name() + ": " + (from == to ? lower(to) : lower(from) + " -> " + lower(to))
                + (job.reason.isEmpty() ? "" : " (" + job.reason + ")");
        if (to == JobState.FAILED) {
            LOG.error(text);
        } else {
            LOG.info(text);
        }
        listeners.forEach(l -> l.stateChanged(job, from, to, job.reason));
        if (to.terminal() || (to == JobState.QUEUED && from != JobState.QUEUED)) {
            schedule();
        }
    }

    void notice(Job job, String kind, String message) {
        job.lastNotice = message;
        listeners.forEach(l -> l.notice(job.name(), kind, message));
    }

    void noticeFile(String jobName, String kind, String message) {
        listeners.forEach(l -> l.notice(jobName, kind, message));
    }

    void stepped(Job job, org.orbitrl.scheduler.job.StepMetrics m) {
        listeners.forEach(l -> l.stepped(job, m));
    }

    void evaluated(Job job, org.orbitrl.scheduler.job.EvalResult r) {
        listeners.forEach(l -> l.evaluated(job, r));
    }

    /** Lets queued jobs start; called once the jobs folder has been read at startup. */
    public synchronized void startScheduling() {
        scheduling = true;
        schedule();
    }

    /** Starts queued jobs whose devices are free, FIFO per backend. */
    synchronized void schedule() {
        if (!scheduling || shuttingDown) {
            return;
        }
        List<Job> queued = new ArrayList<>(jobs.values().stream()
                .filter(j -> j.state == JobState.QUEUED && j.queuedSeq >= 0).toList());
        queued.sort(Comparator.comparingLong(j -> j.queuedSeq));
        Map<ComputeBackend, Job> waiting = new HashMap<>(); // per backend, the first job that waits for devices
        for (Job job : queued) {
            if (job.state != JobState.QUEUED) {
                continue; // started or failed by a nested call
            }
            var placement = job.spec.placement();
            if (dataDirProblem != null) {
                transition(job, JobState.FAILED, dataDirProblem);
                continue;
            }
            JobRunnerProvider provider = runners.get(job.spec.runner());
            if (provider == null) {
                transition(job, JobState.FAILED, "no runner named '" + job.spec.runner() + "' is installed ("
                        + (runners.isEmpty() ? "none is" : "installed: " + String.join(", ",
                        runners.keySet().stream().sorted().toList())) + ")");
                continue;
            }
            int owned = devices.owned(placement.backend());
            if (placement.devices() > owned) {
                transition(job, JobState.FAILED, "needs " + placement.devices() + " " + lower(placement.backend())
                        + " device(s); this daemon owns " + owned + " (devices in orbit.yaml)");
                continue;
            }
            String needs = "waiting for " + placement.devices() + " free " + lower(placement.backend()) + " device(s)";
            Job ahead = waiting.get(placement.backend());
            if (ahead != null) { // FIFO: it waits behind an earlier job of its backend
                waitsFor(job, needs + ", queued behind job " + ahead.name());
                continue;
            }
            List<String> got = devices.take(job.name(), placement.backend(), placement.devices());
            if (got.isEmpty()) {
                waitsFor(job, needs + " (" + devices.free(placement.backend()).size() + " of " + owned + " free)");
                waiting.put(placement.backend(), job); // FIFO: later jobs of this backend wait behind it
                continue;
            }
            job.devices = got;
            transition(job, JobState.PLANNING, "on " + String.join(", ", got));
            Path dir = config.jobDir(job.name());
            JobLoop loop = new JobLoop(this, job, provider, dir, config.log().progress());
            Thread t = Thread.ofPlatform().name("job-" + job.name()).unstarted(loop);
            threads.put(job.name(), t);
            t.start();
        }
    }

    /** A queued job's reason says what it waits for. */
    private void waitsFor(Job job, String why) {
        if (!job.reason.equals(why)) {
            transition(job, JobState.QUEUED, why);
        }
    }

    /** The sample-log folder of a job. */
    Path sampleLogDir(String job) {
        return config.jobDir(job).resolve("samples");
    }

    /** Writes a job's record to the state map. */
    synchronized void persist(Job job) {
        try {
            store.put(JobRecords.of(job));
        } catch (RuntimeException ex) {
            LOG.error("job {}: cannot persist its state: {}", job.name(), ex.toString());
        }
    }

    /** Called by a job's thread as it ends. */
    synchronized void finished(Job job) {
        threads.remove(job.name());
        devices.release(job.name());
        job.devices = List.of();
        job.runner = null;
        notifyAll();
        schedule();
    }

    /**
     * Stops every job thread: each checkpoints and ends, keeping its persisted state so it resumes
     * on the next start. Waits up to {@code timeout}; returns the jobs that did not finish in time.
     */
    public List<String> shutdown(Duration timeout) throws InterruptedException {
        List<Job> active;
        synchronized (this) {
            shuttingDown = true;
            active = jobs.values().stream().filter(j -> threads.containsKey(j.name())).toList();
        }
        active.forEach(j -> j.requestStop(StopKind.SHUTDOWN));
        long deadline = System.nanoTime() + timeout.toNanos();
        synchronized (this) {
            while (!threads.isEmpty()) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    break;
                }
                wait(Math.max(1, left / 1_000_000));
            }
            return List.copyOf(threads.keySet());
        }
    }

    boolean shuttingDown() {
        synchronized (this) {
            return shuttingDown;
        }
    }

    static String lower(Enum<?> e) {
        return e.name().toLowerCase(java.util.Locale.ROOT);
    }
}
