package org.orbitrl.scheduler.job;

import java.nio.file.Path;
import java.util.List;
import java.util.Objects;
import java.util.function.BooleanSupplier;

/**
 * What the daemon gives a runner.
 *
 * @param spec          the job as validated (tunable changes arrive later through {@link JobRunner#apply})
 * @param dataDir       the job's own folder; the runner may create files under it (metrics, reports,
 *                      published adapters)
 * @param sampleLogDir  the folder of the job's sample log ({@link org.orbitrl.scheduler.log.SampleLog});
 *                      it persists across restarts of the daemon
 * @param devices       the device ids the job was given ({@code cuda:0}, {@code cpu:0}), as many as
 *                      {@code placement.devices}
 * @param stopRequested true once the job should stop; a long step may poll it at safe points and
 *                      throw {@link StepAbortedException}
 */
public record JobContext(JobSpec spec, Path dataDir, Path sampleLogDir, List<String> devices,
                         BooleanSupplier stopRequested) {
    public JobContext {
        Objects.requireNonNull(spec, "spec");
        Objects.requireNonNull(dataDir, "dataDir");
        Objects.requireNonNull(sampleLogDir, "sampleLogDir");
        devices = List.copyOf(devices);
        Objects.requireNonNull(stopRequested, "stopRequested");
    }

    /** Whether the job should stop at the next safe point. */
    public boolean isStopRequested() {
        return stopRequested.getAsBoolean();
    }
}
