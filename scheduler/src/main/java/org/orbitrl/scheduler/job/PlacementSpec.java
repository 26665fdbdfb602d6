package org.orbitrl.scheduler.job;

import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * The devices a job needs and how it uses them. The daemon gives a job free devices of its
 * backend; a job that does not fit the free devices waits in the queue.
 *
 * @param backend        cpu or cuda
 * @param devices        devices the job needs
 * @param rolloutDevices of those, how many only roll out (0 = every device trains and rolls out)
 * @param expertParallel expert-parallel group size among the training devices
 * @param tensorParallel tensor-parallel group size among the training devices
 */
public record PlacementSpec(ComputeBackend backend, int devices, int rolloutDevices, int expertParallel,
                            int tensorParallel) {
    public PlacementSpec {
        Checks c = new Checks()
                .require(backend != null, "backend", "is required")
                .range("devices", devices, 1, 1024)
                .range("rollout_devices", rolloutDevices, 0, 1023)
                .range("expert_parallel", expertParallel, 1, 1024)
                .range("tensor_parallel", tensorParallel, 1, 1024);
        int train = devices - rolloutDevices;
        c.require(rolloutDevices < devices, "rollout_devices", "must leave at least one training device: "
                + rolloutDevices + " of " + devices + " devices");
        c.require(train <= 0 || train % ((long) expertParallel * tensorParallel) == 0, "expert_parallel",
                "expert_parallel × tensor_parallel (" + (long) expertParallel * tensorParallel
                        + ") must divide the training devices (" + train + ")");
        c.done();
    }

    /** Devices that train (and, when {@code rollout_devices} is 0, also roll out). */
    public int trainDevices() {
        return devices - rolloutDevices;
    }

    static PlacementSpec read(Section s) {
        ComputeBackend backend = s.choice("backend", ComputeBackend.CPU);
        int devices = s.integer("devices", 1);
        int rollout = s.integer("rollout_devices", 0);
        int ep = s.integer("expert_parallel", 1);
        int tp = s.integer("tensor_parallel", 1);
        return s.build(() -> new PlacementSpec(backend, devices, rollout, ep, tp));
    }
}
