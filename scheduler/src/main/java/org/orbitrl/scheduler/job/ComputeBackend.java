package org.orbitrl.scheduler.job;

/** Which kind of device runs the job. */
public enum ComputeBackend {
    /** The CPU backend (Vector API); each logical device is a share of the host. */
    CPU,
    /** CUDA GPUs. */
    CUDA
}
