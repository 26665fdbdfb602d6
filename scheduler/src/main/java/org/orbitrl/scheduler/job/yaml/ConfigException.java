package org.orbitrl.scheduler.job.yaml;

import java.util.List;

/**
 * A configuration file was rejected. Carries every problem found, not only the first; the
 * message lists them one per line.
 */
public final class ConfigException extends Exception {
    private final transient List<ConfigProblem> problems;

    public ConfigException(List<ConfigProblem> problems) {
        super(format(problems));
        if (problems.isEmpty()) {
            throw new IllegalArgumentException("a ConfigException needs at least one problem");
        }
        this.problems = List.copyOf(problems);
    }

    /** The problems in the order they were found (file order within a section). */
    public List<ConfigProblem> problems() {
        return problems;
    }

    private static String format(List<ConfigProblem> problems) {
        StringBuilder sb = new StringBuilder();
        sb.append(problems.size() == 1 ? "1 problem" : problems.size() + " problems");
        for (ConfigProblem p : problems) {
            sb.append("\n  ").append(p);
        }
        return sb.toString();
    }
}
