package org.orbitrl.memory.plan;

import org.orbitrl.kernels.MemoryCategory;

/**
 * One change to a job that does not fit, with the outcome of re-planning the job with it.
 *
 * @param change   what to change, as a person would say it (with the command-line option)
 * @param fits     whether the job fits with the change
 * @param headroom bytes left on the tightest GPU with the change (negative: still over by that much)
 * @param overflow the category that still overflows, or null
 */
public record Suggestion(String change, boolean fits, long headroom, MemoryCategory overflow) {

    /** One line: the change and its computed outcome. */
    public String describe() {
        return change + ": " + (fits ? "fits, " + Bytes.format(headroom) + " to spare"
                : "still over by " + Bytes.format(-headroom) + " (at " + overflow + ")");
    }
}
