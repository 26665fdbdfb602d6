package org.orbitrl.scheduler.job;

/** How the learning rate moves over the steps of a job. */
public enum LrSchedule {
    /** The configured rate at every step. */
    CONSTANT,
    /** Linear warm-up from 0 over the warm-up steps, then a half cosine down to {@code min_lr_ratio × lr}. */
    WARMUP_COSINE
}
