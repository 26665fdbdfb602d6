package org.orbitrl.daemon.jobs;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.StepMetrics;

class ProgressLineTest {
    @Test
    void aStepLineCarriesStepRewardAccuracyGapThroughputAndEta() {
        StepMetrics m = new StepMetrics(12, 0.4123, 0.375, 1.23e-3, 0.01, 3040, 2.0, 12, 0.5, 1, 0, 64,
                new TreeMap<>(Map.of("loss", 0.1)));
        assertEquals("job quickstart step 12/200 reward 0.412 acc 0.375 gap 1.2e-03 tok/s 1520 step 2.00s eta 6m16s",
                ProgressLine.step("quickstart", m, 200, 376));
        StepMetrics unknown = StepMetrics.basic(1, Double.NaN, 0.5, 0, 0, 1, 4, Map.of());
        assertEquals("job j step 1/10 reward - acc 0.500 gap - tok/s - step 0.00s eta -",
                ProgressLine.step("j", unknown, 10, Double.NaN));
    }

    @Test
    void anEvalLineCarriesAccuracyAndPassAtK() {
        EvalResult r = new EvalResult(12, 0.42, new TreeMap<>(Map.of(1, 0.4, 8, 0.7)), 100, 12.34);
        assertEquals("job q eval @12: accuracy 0.420 pass@1 0.400 pass@8 0.700 (100 prompts, 12.3s)", ProgressLine.eval("q", r));
    }

    @Test
    void durationsReadAsPeopleWriteThem() {
        assertEquals("59s", ProgressLine.duration(59.4));
        assertEquals("1m00s", ProgressLine.duration(59.6));
        assertEquals("2h03m", ProgressLine.duration(2 * 3600 + 3 * 60 + 59));
    }
}
