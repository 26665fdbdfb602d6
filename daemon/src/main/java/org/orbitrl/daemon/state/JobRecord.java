package org.orbitrl.daemon.state;

import java.util.Map;
import java.util.TreeMap;

/**
 * What the daemon remembers about a job across restarts. Stored as JSON in the state map;
 * {@code version} is the record's format. Version 1 records (without {@code seq},
 * {@code metricsStep}, {@code evalStep} and {@code stepExtra}) still read: the missing numbers
 * are 0 and the missing map is empty ({@code src/test/resources/state/job-record-v1.json}).
 *
 * @param version            format of this record: {@value #VERSION} ({@code 1}: before the fields marked 2)
 * @param name               the job's name
 * @param seq                (2) the order in which the daemon first accepted the job, from 1; jobs are
 *                           listed in it
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
 * @param metrics            latest measurements by name, finite values only: of the last step
 *                           ({@code reward_mean}, {@code accuracy}, {@code logprob_gap_mean},
 *                           {@code logprob_gap_max}, {@code tokens}, {@code tokens_per_second},
 *                           {@code step_seconds}, {@code step_adapter_version}, {@code staleness_mean},
 *                           {@code staleness_max}, {@code dropped_stale}, {@code step_samples_trained})
 *                           and of the last evaluation ({@code eval_accuracy}, {@code eval_prompts},
 *                           {@code eval_seconds}); version 1 records hold the first five of the step's
 *                           and {@code eval_accuracy}
 * @param passAtK            latest pass@k by k
 * @param metricsStep        (2) the step the last step's measurements are of (-1: none yet)
 * @param evalStep           (2) the step the last evaluation ran at (0: before training; -1: none yet)
 * @param stepExtra          (2) the last step's further measurements by name (loss, kl, ...), finite values only
 * @param spec               the effective job file (canonical YAML) the job runs with
 * @param updatedAt          when this record was written (ISO-8601)
 */
public record JobRecord(int version, String name, long seq, String file, String fileSha256, String state, String reason,
                        boolean pausedByUser, long step, long totalSteps, long adapterVersion, long consumedIndex,
                        long samplesTrained, long lastCheckpointStep, String lastCheckpointFile, String lastCheckpointAt,
                        Map<String, Double> metrics, Map<String, Double> passAtK, long metricsStep, long evalStep,
                        Map<String, Double> stepExtra, String spec, String updatedAt) {
    /** The format this daemon writes. */
    public static final int VERSION = 2;

    public JobRecord {
        metrics = metrics == null ? Map.of() : new TreeMap<>(metrics);
        passAtK = passAtK == null ? Map.of() : new TreeMap<>(passAtK);
        stepExtra = stepExtra == null ? Map.of() : new TreeMap<>(stepExtra);
        reason = reason == null ? "" : reason;
    }
}
