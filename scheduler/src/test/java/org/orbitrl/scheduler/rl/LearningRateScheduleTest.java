package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** Schedule values at known steps. Tolerance 1e-15 abs (closed forms in double). */
class LearningRateScheduleTest {

    @Test
    void constant() {
        LearningRateSchedule s = LearningRateSchedule.constant(3e-4);
        assertEquals(3e-4, s.at(1));
        assertEquals(3e-4, s.at(1_000_000));
    }

    @Test
    void warmupThenCosine() {
        // peak 1e-3, warmup 10, total 110, floor 0.1 * peak
        LearningRateSchedule s = LearningRateSchedule.warmupCosine(1e-3, 10, 110, 0.1);
        RlAssert.close("t=1", 1e-4, s.at(1), 1e-15, 0);     // 1e-3 * 1/10
        RlAssert.close("t=5", 5e-4, s.at(5), 1e-15, 0);     // 1e-3 * 5/10
        RlAssert.close("t=10", 1e-3, s.at(10), 1e-15, 0);   // peak
        // t=35: progress 25/100 = 0.25, 0.5(1 + cos(pi/4)) = 0.8535533906, 0.1 + 0.9 * 0.8535533906 = 0.8681980515
        RlAssert.close("t=35", 8.681980515e-4, s.at(35), 1e-13, 0);
        // t=60: progress 0.5, cos = 0: 0.1 + 0.9 * 0.5 = 0.55
        RlAssert.close("t=60", 5.5e-4, s.at(60), 1e-15, 0);
        RlAssert.close("t=110", 1e-4, s.at(110), 1e-15, 0);  // floor
        RlAssert.close("t=500", 1e-4, s.at(500), 1e-15, 0);  // stays at the floor
        for (long t = 11; t < 110; t++) {
            if (!(s.at(t + 1) < s.at(t))) {
                throw new AssertionError("not decreasing at " + t);
            }
        }
    }

    @Test
    void noWarmup() {
        // warmup 0, total 4, floor 0: t=1 progress 1/4: 0.5(1 + cos(pi/4)) = 0.8535533906
        LearningRateSchedule s = LearningRateSchedule.warmupCosine(2.0, 0, 4, 0);
        RlAssert.close("t=1", 2 * 0.8535533906, s.at(1), 1e-9, 0);
        RlAssert.close("t=2", 1.0, s.at(2), 1e-15, 0);
        RlAssert.close("t=4", 0.0, s.at(4), 1e-15, 0);
    }

    @Test
    void badArgumentsAreErrors() {
        assertThrows(IllegalArgumentException.class, () -> LearningRateSchedule.constant(1).at(0));
        assertThrows(IllegalArgumentException.class, () -> LearningRateSchedule.warmupCosine(1, 10, 5, 0));
        assertThrows(IllegalArgumentException.class, () -> LearningRateSchedule.warmupCosine(1, 1, 5, 1.5));
        assertThrows(IllegalArgumentException.class, () -> LearningRateSchedule.constant(Double.NaN));
    }
}
