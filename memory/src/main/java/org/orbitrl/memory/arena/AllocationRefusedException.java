package org.orbitrl.memory.arena;

import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.memory.plan.Bytes;

/**
 * An allocation the arena refused because it would break the plan's budget for its category, or
 * would not fit the device at all, before the device itself ran out.
 */
public final class AllocationRefusedException extends RuntimeException {
    private final MemoryCategory category;
    private final long requested;
    private final long budget;
    private final long live;
    private final String job;

    AllocationRefusedException(String device, String job, MemoryCategory category, long requested, long budget, long live,
                               boolean deviceFull) {
        super(deviceFull
                ? device + ": " + job + " asked for " + Bytes.format(requested) + " (" + requested + " B) of " + category
                        + " but the device holds " + Bytes.format(live) + " of its " + Bytes.format(budget)
                : device + ": " + job + " asked for " + Bytes.format(requested) + " (" + requested + " B) of " + category
                        + ", which would break the plan: " + category + " is budgeted " + Bytes.format(budget) + " ("
                        + budget + " B) and " + Bytes.format(live) + " (" + live + " B) of it are live");
        this.category = category;
        this.requested = requested;
        this.budget = budget;
        this.live = live;
        this.job = job;
    }

    /** The category of the refused allocation. */
    public MemoryCategory category() {
        return category;
    }

    /** Bytes asked for (rounded up to the device's alignment). */
    public long requested() {
        return requested;
    }

    /** The category's planned budget (or the device's capacity when the device was full). */
    public long budget() {
        return budget;
    }

    /** Bytes live in the category (or on the device) when it was refused. */
    public long live() {
        return live;
    }

    /** The job (scope) that asked. */
    public String job() {
        return job;
    }
}
