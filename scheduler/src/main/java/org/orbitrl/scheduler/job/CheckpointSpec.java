package org.orbitrl.scheduler.job;

import java.time.Duration;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * When the job checkpoints (besides on stop, on pause requests and before the daemon exits).
 *
 * @param interval steps between checkpoints (0 = only at the end and when stopped)
 * @param every    also checkpoint when this much time has passed since the last one (0 = off)
 * @param keep     newest checkpoints kept on disk; older ones are deleted after a new one is safe
 */
public record CheckpointSpec(int interval, Duration every, int keep) {
    public CheckpointSpec {
        new Checks()
                .range("interval", interval, 0, 1_000_000_000)
                .require(every != null && !every.isNegative(), "every", "must not be negative")
                .range("keep", keep, 1, 1000)
                .done();
    }

    static CheckpointSpec read(Section s) {
        int interval = s.integer("interval", 10);
        Duration every = s.duration("every", Duration.ZERO);
        int keep = s.integer("keep", 3);
        return s.build(() -> new CheckpointSpec(interval, every, keep));
    }
}
