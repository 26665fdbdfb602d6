package org.orbitrl.daemon.state;

import java.util.Map;
import java.util.TreeMap;

/**
 * What the daemon remembers about a job across restarts. Stored as JSON in the state map;
 * {@code version} is the record's format.
 *
 * @param version            format of this record (1)
 * @param name               the job's name
 * @param file               the job file it came from
 * @param fileSha256         hash of the job file's bytes when last read
 * @param state              lifecycle state name ({@code RUNNING}, ...)
 * @param reason             why the job is in its state (failure reason, what it waits for)
 * @param pausedByUser       the job was paused and stays paused after a restart
 * @param step               steps completed
 * @param totalSteps         steps the job runs
 * @param adapterVersion     adapter version current rollouts use
 * @param consumedIndex      sample-log index of the last entry the trainer consumed
 * @param samplesTrained     samples trained
 * @param lastCheckpointStep step of the last checkpoint written (-1: none)
 * @param lastCheckpointFile file of the last checkpoint written
 * @param lastCheckpointAt   when it was written (ISO-8601)
 * @param metrics            latest measurements by name (reward_mean, eval_accuracy, ...)
 * @param passAtK            latest pass@k by k
 * @param spec               the effective job file (canonical YAML) the job runs with
 * @param updatedAt          when this record was written (ISO-8601)
 */
public record JobRecord(int version, String name, String file, String fileSha256, String state, String reason,
                        boolean pausedByUser, long step, long totalSteps, long adapterVersion, long consumedIndex,
                        long samplesTrained, long lastCheckpointStep, String lastCheckpointFile, String lastCheckpointAt,
                        Map<String, Double> metrics, Map<String, Double> passAtK, String spec, String updatedAt) {
    public JobRecord {
        metrics = metrics == null ? Map.of() : new TreeMap<>(metrics);
        passAtK = passAtK == null ? Map.of() : new TreeMap<>(passAtK);
        reason = reason == null ? "" : reason;
    }
}
