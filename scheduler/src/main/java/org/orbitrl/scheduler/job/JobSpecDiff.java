package org.orbitrl.scheduler.job;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * What changed between two versions of a job file, field by field, and whether each change is
 * allowed while the job runs.
 */
public final class JobSpecDiff {
    /**
     * One changed field.
     *
     * @param key     the job-file key path ({@code sampling.temperature})
     * @param before  the old value as the file writes it
     * @param after   the new value as the file writes it
     * @param tunable whether the field may change while the job runs
     */
    public record Change(String key, String before, String after, boolean tunable) {
        @Override
        public String toString() {
            return key + ": " + before + " -> " + after;
        }
    }

    private JobSpecDiff() {
    }

    /** Every field whose value differs, in file order. The job name is not a field. */
    public static List<Change> between(JobSpec before, JobSpec after) {
        Map<String, SpecTree.Leaf> a = SpecTree.leaves(before, true, "name");
        Map<String, SpecTree.Leaf> b = SpecTree.leaves(after, true, "name");
        List<Change> out = new ArrayList<>();
        for (Map.Entry<String, SpecTree.Leaf> e : a.entrySet()) {
            SpecTree.Leaf other = b.get(e.getKey());
            if (!Objects.equals(e.getValue().value(), other.value())) {
                out.add(new Change(e.getKey(), String.valueOf(e.getValue().value()), String.valueOf(other.value()),
                        e.getValue().tunable()));
            }
        }
        return out;
    }

    /** The changes to fixed fields among {@code changes}. */
    public static List<Change> fixed(List<Change> changes) {
        return changes.stream().filter(c -> !c.tunable()).toList();
    }
}
