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

    /** Problems listed in the message; the rest are counted (all stay in {@link #problems()}). */
    static final int LISTED = 50;

    private static String format(List<ConfigProblem> problems) {
        StringBuilder sb = new StringBuilder();
        sb.append(problems.size() == 1 ? "1 problem" : problems.size() + " problems");
        for (ConfigProblem p : problems.subList(0, Math.min(LISTED, problems.size()))) {
            String line = p.toString();
            sb.append("\n  ").append(line.length() > 1000 ? line.substring(0, 1000) + "..." : line);
        }
        if (problems.size() > LISTED) {
            sb.append("\n  ... and ").append(problems.size() - LISTED).append(" more");
        }
        return sb.toString();
    }
}
