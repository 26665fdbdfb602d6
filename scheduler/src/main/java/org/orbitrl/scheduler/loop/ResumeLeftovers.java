package org.orbitrl.scheduler.loop;

import java.util.Optional;
import org.orbitrl.scheduler.log.LogEntry;
import org.orbitrl.scheduler.log.SampleLog;
import org.orbitrl.scheduler.log.SampleLogReader;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.log.VersionSpan;

/**
 * What a restarted job trains first: the groups its sample log holds past the checkpoint's read position. They were
 * rolled out before the restart, possibly by adapter versions the checkpoint does not hold, and each is trained once,
 * as every logged group is; how far their policy is from the restored adapter the train/rollout gap of the steps that
 * take them shows.
 */
record ResumeLeftovers(int groups, long samples, long oldestVersion, long newestVersion) {

    /** The groups of {@code log} after {@code consumedIndex}; empty where there are none. */
    static Optional<ResumeLeftovers> of(SampleLog log, long consumedIndex) {
        int groups = 0;
        long samples = 0;
        long oldest = Long.MAX_VALUE;
        long newest = Long.MIN_VALUE;
        try (SampleLogReader r = log.reader().startAfter(consumedIndex)) {
            for (LogEntry e = r.next(); e != null; e = r.next()) {
                if (e instanceof LogEntry.Group g) {
                    groups++;
                    for (SampleRecord s : g.group().samples()) {
                        samples++;
                        for (VersionSpan v : s.versions()) {
                            oldest = Math.min(oldest, v.version());
                            newest = Math.max(newest, v.version());
                        }
                    }
                }
            }
        }
        return groups == 0 ? Optional.empty() : Optional.of(new ResumeLeftovers(groups, samples, oldest, newest));
    }

    /**
     * The line a restarted job logs, with the checkpoint's step and the adapter version it restored ({@code
     * checkpointStep} negative: the job had no checkpoint and starts from step 0 with a new adapter).
     */
    String describe(long checkpointStep, long restoredVersion) {
        String versions = oldestVersion == newestVersion ? "adapter version " + oldestVersion
                : "adapter versions " + oldestVersion + " to " + newestVersion;
        String after = checkpointStep < 0 ? "logged before the restart, with no checkpoint,"
                : "logged after the checkpoint of step " + checkpointStep;
        String adapter = checkpointStep < 0 ? "the new adapter" : "the restored adapter";
        return groups + (groups == 1 ? " group" : " groups") + " (" + samples + " samples) " + after + " train first:"
                + " rolled out before the restart by " + versions + " (" + adapter + ": version " + restoredVersion
                + "); the train/rollout gap of those steps shows how far their policy is from it";
    }
}
