package org.orbitrl.memory.plan;

import java.util.List;

/**
 * A job does not fit its node: thrown by {@link MemoryPlanner#check} before anything is loaded.
 * The message holds the plan's table, the category that overflows and the computed suggestions.
 */
public final class PlanRefusedException extends RuntimeException {
    private final transient MemoryPlan plan;
    private final transient List<Suggestion> suggestions;

    public PlanRefusedException(MemoryPlan plan, List<Suggestion> suggestions) {
        super(PlanTable.refusal(plan, suggestions));
        this.plan = plan;
        this.suggestions = List.copyOf(suggestions);
    }

    /** The plan that did not fit. */
    public MemoryPlan plan() {
        return plan;
    }

    /** The changes tried, with their outcomes. */
    public List<Suggestion> suggestions() {
        return suggestions;
    }
}
