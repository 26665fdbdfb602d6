package org.orbitrl.daemon.jobs;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.orbitrl.scheduler.job.DeviceMemory;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.RunnerState;
import org.orbitrl.scheduler.job.StepMetrics;

/**
 * One job as the daemon sees it: its spec, state and latest measurements (read by JMX from any
 * thread), and the requests (pause, stop, checkpoint, tunables) its thread acts on between steps.
 * State changes go through the {@link JobManager}.
 */
public final class Job {
    private final String name;
    private final Object control = new Object();

    volatile Path file;
    volatile String fileHash = "";
    /** Size and modification time of the job file when last read; a rescan skips an unchanged file. */
    volatile long fileSize = -1;
    volatile long fileModified;
    volatile JobSpec spec;
    volatile JobState state = JobState.QUEUED;
    volatile String reason = "";
    volatile String lastNotice = "";
    volatile List<String> devices = List.of();
    volatile StepMetrics lastStep;
    volatile EvalResult lastEval;
    volatile RunnerState runnerState = new RunnerState(0, 0, -1, 0);
    volatile double etaSeconds = Double.NaN;
    volatile long lastCheckpointStep = -1;
    volatile String lastCheckpointFile = "";
    volatile String lastCheckpointAt = "";
    volatile JobRunner runner;
    volatile boolean pausedByUser;
    /** Whether the job has ever written a checkpoint (its fixed fields are then frozen). */
    volatile boolean hasCheckpoint;
    /** Place in the queue (FIFO per backend); -1 until the job has been checked and queued. */
    long queuedSeq = -1;
    /** The order in which the daemon first accepted the job; jobs are listed in it, across restarts too. */
    long acceptedSeq;
    private JobSpec yamlOf;
    private String yaml = "";

    // Requests, guarded by `control`.
    private StopKind stop = StopKind.NONE;
    private boolean checkpointNow;
    private boolean tunablesChanged;

    Job(String name) {
        this.name = name;
    }

    public String name() {
        return name;
    }

    public JobState state() {
        return state;
    }

    /** Why the job is in its state (empty when there is nothing to say). */
    public String reason() {
        return reason;
    }

    /** The last notice about the job (a refused change, an invalid edit), empty if none. */
    public String lastNotice() {
        return lastNotice;
    }

    /** The job's spec, or {@code null} if its file never validated. */
    public JobSpec spec() {
        return spec;
    }

    public Path file() {
        return file;
    }

    public List<String> devices() {
        return devices;
    }

    public StepMetrics lastStep() {
        return lastStep;
    }

    public EvalResult lastEval() {
        return lastEval;
    }

    public RunnerState runnerState() {
        return runnerState;
    }

    /** Seconds until the last step, from the recent step time; NaN when unknown. */
    public double etaSeconds() {
        return etaSeconds;
    }

    public long lastCheckpointStep() {
        return lastCheckpointStep;
    }

    public String lastCheckpointFile() {
        return lastCheckpointFile;
    }

    public boolean pausedByUser() {
        return pausedByUser;
    }

    /** The runner's live gauges, empty when no runner is loaded. */
    public Map<String, Double> gauges() {
        JobRunner r = runner;
        return r == null ? Map.of() : r.gauges();
    }

    /** Memory the runner holds per device, empty when no runner is loaded. */
    public List<DeviceMemory> memory() {
        JobRunner r = runner;
        return r == null ? List.of() : r.memory();
    }

    /** The spec as canonical YAML, computed once per spec (it is persisted after every step). */
    synchronized String specYaml() {
        JobSpec s = spec;
        if (s != yamlOf) {
            yaml = s == null ? "" : org.orbitrl.scheduler.job.JobFiles.toYaml(s);
            yamlOf = s;
        }
        return yaml;
    }

    // ---- requests, made by the manager; acted on by the job's thread between steps ----

    void requestStop(StopKind kind) {
        synchronized (control) {
            if (stop == StopKind.NONE || kind == StopKind.SHUTDOWN) {
                stop = kind;
            }
            control.notifyAll();
        }
    }

    void requestCheckpoint() {
        synchronized (control) {
            checkpointNow = true;
            control.notifyAll();
        }
    }

    void tunablesChanged() {
        synchronized (control) {
            tunablesChanged = true;
            control.notifyAll();
        }
    }

    void wake() {
        synchronized (control) {
            control.notifyAll();
        }
    }

    StopKind stopRequested() {
        synchronized (control) {
            return stop;
        }
    }

    boolean takeCheckpointRequest() {
        synchronized (control) {
            boolean r = checkpointNow;
            checkpointNow = false;
            return r;
        }
    }

    boolean takeTunablesChanged() {
        synchronized (control) {
            boolean r = tunablesChanged;
            tunablesChanged = false;
            return r;
        }
    }

    /** Waits while paused and nothing is requested; returns when resumed, stopped or asked to act. */
    void awaitWhilePaused() throws InterruptedException {
        synchronized (control) {
            while (pausedByUser && stop == StopKind.NONE && !checkpointNow && !tunablesChanged) {
                control.wait(1000);
            }
        }
    }

    /** Clears requests before the job runs again. */
    void resetRequests() {
        synchronized (control) {
            stop = StopKind.NONE;
            checkpointNow = false;
            tunablesChanged = false;
        }
    }

    @Override
    public String toString() {
        return "job " + name + " (" + state + (reason.isEmpty() ? "" : ": " + reason) + ")";
    }
}
