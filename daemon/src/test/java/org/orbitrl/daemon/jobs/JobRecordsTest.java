package org.orbitrl.daemon.jobs;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.InputStream;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.orbitrl.daemon.state.JobRecord;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.StepMetrics;

/** Records written by earlier daemons still restore everything they hold. */
class JobRecordsTest {
    /** As the state store reads records: unknown properties ignored, missing ones at their defaults. */
    private static final ObjectMapper JSON = new ObjectMapper()
            .configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);

    /** {@code state/job-record-v1.json}: a completed job as the version 1 daemon stored it. */
    @Test
    void aVersion1RecordRestoresTheLastStepAndEvaluationItHolds() throws Exception {
        JobRecord r;
        try (InputStream in = JobRecordsTest.class.getResourceAsStream("/state/job-record-v1.json")) {
            r = JSON.readValue(in, JobRecord.class);
        }
        assertEquals(1, r.version());
        Job job = JobRecords.toJob(r);
        assertEquals(JobState.COMPLETED, job.state());
        assertEquals("ran 30 steps", job.reason());
        StepMetrics m = job.lastStep();
        assertEquals(30, m.step());
        assertEquals(0.5141, m.rewardMean());
        assertEquals(0.5, m.accuracy());
        assertEquals(2.0, m.stepSeconds());
        assertEquals(512.0, m.tokensPerSecond(), 1e-9);
        assertEquals(Double.NaN, m.logprobGapMean(), "not measured: not stored");
        EvalResult e = job.lastEval();
        assertEquals(30, e.step(), "a version 1 record's evaluation is taken to be of its last step");
        assertEquals(0.5, e.accuracy());
        assertEquals(Map.of(1, 0.5, 4, 0.75, 8, 0.875), e.passAtK());
    }
}
