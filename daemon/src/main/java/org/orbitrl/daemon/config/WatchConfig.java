package org.orbitrl.daemon.config;

import java.time.Duration;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;
import org.orbitrl.scheduler.job.yaml.Units;

/**
 * How the jobs folder is watched.
 *
 * @param debounce a job file is read only after it has been quiet this long (half-written files
 *                 are never read)
 * @param rescan   the whole folder is also compared with what the daemon knows this often, in
 *                 case the file system does not report a change (network file systems)
 */
public record WatchConfig(Duration debounce, Duration rescan) {
    public WatchConfig {
        new Checks()
                .require(debounce.compareTo(Duration.ofMillis(10)) >= 0 && debounce.compareTo(Duration.ofMinutes(10)) <= 0,
                        "debounce", "must be between 10ms and 10m, got " + Units.formatDuration(debounce))
                .require(rescan.compareTo(Duration.ofSeconds(1)) >= 0, "rescan",
                        "must be at least 1s, got " + Units.formatDuration(rescan))
                .done();
    }

    /** As the configuration file writes it: {@code watch.debounce 500ms, watch.rescan 30s}. */
    @Override
    public String toString() {
        return "watch.debounce " + Units.formatDuration(debounce) + ", watch.rescan " + Units.formatDuration(rescan);
    }

    static WatchConfig read(Section s) {
        Duration debounce = s.duration("debounce", Duration.ofMillis(500));
        Duration rescan = s.duration("rescan", Duration.ofSeconds(30));
        return s.build(() -> new WatchConfig(debounce, rescan));
    }
}
