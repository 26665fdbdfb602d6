package org.orbitrl.scheduler.job;

import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import org.orbitrl.scheduler.job.yaml.SpecException;

/**
 * The names of the live-tunable fields, as {@code orbitctl set NAME KEY VALUE} and the JMX
 * {@code set} operation accept them: the job-file path ({@code optimizer.lr}) or a short alias
 * ({@code lr}, {@code learning_rate}).
 */
public enum TunableKey {
    LEARNING_RATE("optimizer.lr", "lr", "learning_rate"),
    TEMPERATURE("sampling.temperature", "temperature"),
    STALENESS_BOUND("async.staleness_bound", "staleness_bound", "staleness"),
    EVAL_INTERVAL("eval.interval", "eval_interval");

    private final String path;
    private final List<String> aliases;

    TunableKey(String path, String... aliases) {
        this.path = path;
        this.aliases = List.of(aliases);
    }

    /** The key's path in a job file. */
    public String path() {
        return path;
    }

    /** The key a text names, or an {@link IllegalArgumentException} listing the tunable keys. */
    public static TunableKey parse(String text) {
        String t = text.strip().toLowerCase(Locale.ROOT).replace('-', '_');
        for (TunableKey k : values()) {
            if (k.path.equals(t) || k.aliases.contains(t)) {
                return k;
            }
        }
        throw new IllegalArgumentException("'" + text + "' is not a live-tunable key; tunable keys are "
                + String.join(", ", Arrays.stream(values()).map(TunableKey::path).toList())
                + " (everything else is fixed for the life of a job)");
    }

    /**
     * The job with this key set from a text value; the value is parsed and validated by the
     * job's records, and a bad value is an {@link IllegalArgumentException} saying what was expected.
     */
    public JobSpec apply(JobSpec spec, String value) {
        Tunables t = spec.tunables();
        String v = value.strip();
        try {
            Tunables next = switch (this) {
                case LEARNING_RATE -> t.withLearningRate(Double.parseDouble(v));
                case TEMPERATURE -> t.withTemperature(Double.parseDouble(v));
                case STALENESS_BOUND -> t.withStalenessBound(Integer.parseInt(v));
                case EVAL_INTERVAL -> t.withEvalInterval(Integer.parseInt(v));
            };
            return spec.with(next);
        } catch (NumberFormatException e) {
            String expected = this == LEARNING_RATE || this == TEMPERATURE ? "a number" : "an integer";
            throw new IllegalArgumentException(path + ": expected " + expected + ", got '" + value + "'", e);
        } catch (SpecException e) {
            throw new IllegalArgumentException(path + ": " + e.violations().getFirst().message(), e);
        }
    }
}
