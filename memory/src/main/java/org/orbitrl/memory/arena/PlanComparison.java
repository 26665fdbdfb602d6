package org.orbitrl.memory.arena;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.memory.plan.Bytes;
import org.orbitrl.memory.plan.GpuBudget;
import org.orbitrl.memory.plan.PlanTable;

/**
 * Predicted against measured bytes per category on one device: the plan's budget, the arena's
 * peak and what is live now.
 *
 * @param rows one per category the plan budgets or the arena used
 */
public record PlanComparison(List<Row> rows) {

    /**
     * One category.
     *
     * @param category  the category
     * @param predicted the plan's bytes
     * @param peak      the most the arena held at once
     * @param live      what it holds now
     */
    public record Row(MemoryCategory category, long predicted, long peak, long live) {
        /** Peak over prediction (0 when nothing was predicted). */
        public double ratio() {
            return predicted == 0 ? 0 : (double) peak / predicted;
        }
    }

    public PlanComparison {
        rows = List.copyOf(rows);
    }

    static PlanComparison of(GpuBudget plan, Map<MemoryCategory, CategoryUsage> usage) {
        List<Row> rows = new ArrayList<>();
        for (MemoryCategory c : MemoryCategory.values()) {
            CategoryUsage u = usage.get(c);
            long predicted = plan.get(c);
            if (predicted > 0 || u.peak() > 0) {
                rows.add(new Row(c, predicted, u.peak(), u.live()));
            }
        }
        return new PlanComparison(rows);
    }

    /** The row of {@code c}, or one of zeros. */
    public Row row(MemoryCategory c) {
        return rows.stream().filter(r -> r.category() == c).findFirst().orElse(new Row(c, 0, 0, 0));
    }

    /** As a table: category, predicted, peak, live, peak/predicted. */
    public String render() {
        StringBuilder sb = new StringBuilder(String.format(Locale.ROOT, "%-20s %14s %14s %14s %8s%n", "category",
                "predicted", "peak", "live", "peak/pred"));
        for (Row r : rows) {
            sb.append(String.format(Locale.ROOT, "%-20s %14s %14s %14s %8s%n", PlanTable.label(r.category()),
                    Bytes.format(r.predicted()), Bytes.format(r.peak()), Bytes.format(r.live()),
                    r.predicted() == 0 ? "-" : String.format(Locale.ROOT, "%.3f", r.ratio())));
        }
        return sb.toString();
    }
}
