package org.orbitrl.scheduler.loop;

import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.JobRunnerProvider;
import org.orbitrl.scheduler.job.JobSpec;

/** {@code runner: rl}: Orbit's RL loop. */
public final class RlRunnerProvider implements JobRunnerProvider {
    @Override
    public String name() {
        return "rl";
    }

    @Override
    public JobRunner create(JobContext context) {
        // a job split by experts: one RL runner a device, in lockstep
        return RlPlan.expertParallel(context.spec()) ? new ExpertParallelRunner(context) : new RlJobRunner(context);
    }

    /** The job's model: its folder, config and safetensors headers ({@link ModelCheck}). */
    @Override
    public void check(JobSpec spec) throws JobException {
        ModelCheck.check(spec);
    }
}
