package org.orbitrl.daemon.config;

import java.nio.file.Path;
import java.util.Set;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * Logging (SLF4J simple logger).
 *
 * @param level        trace, debug, info, warn or error
 * @param file         log file; {@code null} logs to standard error (the journal under systemd)
 * @param showDateTime prefix lines with the time (off under systemd: the journal adds it)
 * @param progress     log one progress line per job step
 */
public record LogConfig(String level, Path file, boolean showDateTime, boolean progress) {
    private static final Set<String> LEVELS = Set.of("trace", "debug", "info", "warn", "error");

    public LogConfig {
        new Checks().require(LEVELS.contains(level), "level", "expected one of trace, debug, info, warn, error, got '"
                + level + "'").done();
    }

    /** As the configuration file writes it: {@code log.level info, log.file (standard error), ...}. */
    @Override
    public String toString() {
        return "log.level " + level + ", log.file " + (file == null ? "(standard error)" : file) + ", log.show_date_time "
                + showDateTime + ", log.progress " + progress;
    }

    static LogConfig read(Section s, Path base) {
        String level = s.string("level", "info");
        Path file = OrbitConfig.path(s, "file", base);
        boolean showDateTime = s.bool("show_date_time", false);
        boolean progress = s.bool("progress", true);
        return s.build(() -> new LogConfig(level, file, showDateTime, progress));
    }
}
