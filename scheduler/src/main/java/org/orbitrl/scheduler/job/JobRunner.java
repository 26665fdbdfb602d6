package org.orbitrl.scheduler.job;

import java.io.IOException;
import java.util.List;
import java.util.Map;
import org.orbitrl.scheduler.job.checkpoint.Checkpoint;
import org.orbitrl.scheduler.job.checkpoint.CheckpointWriter;

/**
 * Runs one job for the daemon. The daemon calls, from the job's own thread:
 *
 * <pre>
 * plan()                     PLANNING: check the job fits its devices; loads nothing
 * load(checkpoint or null)   LOADING: load the base, build adapter and engines, restore state
 * evaluate()                 before the first step of a fresh job
 * loop until state().step() == spec.steps():
 *     step()                 one RL step: rollout → reward → log → train → publish v+1
 *     evaluate()             every eval.interval steps
 *     checkpoint(out)        every checkpoint.interval steps, and on stop / pause / shutdown
 *     pause() … resume()     when paused (between steps)
 *     apply(tunables)        when a tunable field changed (between steps)
 * evaluate(), checkpoint(out)   after the last step
 * close()
 * </pre>
 *
 * Between two calls the runner's state is consistent: {@link #state()} and a checkpoint taken
 * then describe the same point. {@link #gauges()} and {@link #memory()} are read by other threads
 * (JMX) at any time and must be thread-safe.
 *
 * <p>Exactly once: the trainer consumes the sample log by index and a checkpoint stores the
 * index of the last entry consumed together with the state that consumed it. After a restart
 * {@link #load} resumes reading after that index, so a logged sample is trained exactly once;
 * samples consumed after the checkpoint are trained again from the log, not regenerated.
 */
public interface JobRunner extends AutoCloseable {

    /**
     * Checks that the job fits the devices of its context and returns the plan. Loads nothing.
     *
     * @throws PlanRefusedException if it does not fit, with the table and what would make it fit
     */
    JobPlan plan() throws JobException;

    /**
     * Loads the job: the base model, the adapter, the rollout engines, the sample log. With a
     * checkpoint, restores everything it holds (adapter, optimizer, RNG, consumed index) so that
     * the job continues as if it had not stopped.
     *
     * @param resumeFrom the checkpoint to resume from, or {@code null} for a fresh start
     */
    void load(Checkpoint resumeFrom) throws JobException;

    /**
     * Runs one step and returns what it measured.
     *
     * @throws StepAbortedException if the job is stopping and the step gave up with the state
     *                              unchanged
     */
    StepMetrics step() throws JobException;

    /** Evaluates on the held-out prompts. Does not change the training state. */
    EvalResult evaluate() throws JobException;

    /** Writes the runner's state as checkpoint sections. */
    void checkpoint(CheckpointWriter out) throws IOException, JobException;

    /** Where the runner stands; consistent between calls. */
    RunnerState state();

    /** The job is paused: stop background work (async rollout) until {@link #resume()}. */
    void pause();

    /** The job continues after {@link #pause()}. */
    void resume();

    /** Tunable fields changed; the values are already validated ({@link JobSpec#with}). */
    void apply(Tunables tunables) throws JobException;

    /**
     * Live measurements for monitoring, by name: for example {@code rollout_idle_fraction},
     * {@code trainer_idle_fraction}, {@code rollout_backpressured} (0/1), {@code trainer_waiting}
     * (0/1), {@code queue_lag_groups}, {@code publish_bytes}, {@code publish_seconds}.
     * Thread-safe.
     */
    Map<String, Double> gauges();

    /** Memory held on each device, by category. Thread-safe. */
    List<DeviceMemory> memory();

    /** Frees everything the job holds (device memory, threads, files). */
    @Override
    void close();
}
