package org.orbitrl.scheduler.loop;

import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.JobRunnerProvider;

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
}
