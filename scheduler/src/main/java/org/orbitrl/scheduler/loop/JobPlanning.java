package org.orbitrl.scheduler.loop;

import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobSpec;

/** The memory plan request of an RL job as its runner makes it, for tools that plan a job file without running it. */
public final class JobPlanning {
    private JobPlanning() {
    }

    /**
     * The job's plan request: its model, base and adapter as its runner loads and attaches them, batch, KV cache, memory
     * section and placement (rollout devices, data-parallel replicas, an expert split), kept layers resolved, on the
     * job's devices of this machine's GPU (H200s where none is visible) or the host's memory for
     * {@code placement.backend: cpu}.
     *
     * @throws JobException what the job's runner refuses before loading (a placement it does not run, a base format it
     *                      does not load), with the runner's message naming the key
     */
    public static PlanRequest request(JobSpec spec) throws JobException {
        return RlPlan.request(spec);
    }
}
