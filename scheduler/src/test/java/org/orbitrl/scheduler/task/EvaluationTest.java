package org.orbitrl.scheduler.task;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

/** Accuracy and pass@k aggregated over problems, against hand computations. */
class EvaluationTest {

    private static final boolean T = true;
    private static final boolean F = false;

    @Test
    void handComputedPassAtK() {
        boolean[][] samples = {
            {T, F, F, T, F}, // n=5, c=2: pass@1 = 2/5; pass@3 = 1 - C(3,3)/C(5,3) = 1 - 1/10 = 0.9
            {F, F, F, F},    // n=4, c=0: 0, 0
            {T, T, T},       // n=3, c=3: 1, 1
            {F, T, F, F},    // n=4, c=1: pass@1 = 1/4; pass@3 = 1 - C(3,3)/C(4,3) = 3/4
        };
        boolean[] greedy = {T, F, T, F};
        Evaluation e = Evaluation.of(greedy, samples, List.of(1, 3));
        assertEquals(4, e.problems());
        assertEquals(0.5, e.accuracy(), 1e-15);
        assertEquals((0.4 + 0 + 1 + 0.25) / 4, e.passAtK().get(1), 1e-15);
        assertEquals((0.9 + 0 + 1 + 0.75) / 4, e.passAtK().get(3), 1e-15);
        assertEquals(e.passAtK().get(1), e.sampleAccuracy(), 1e-15, "pass@1 is the mean sample accuracy");
        assertEquals(List.of(1, 3), List.copyOf(e.passAtK().keySet()));
    }

    @Test
    void passAtKMatchesEnumeratingSubsets() {
        // n = 6, c = 2, k = 2: of the C(6,2) = 15 pairs, C(4,2) = 6 have no correct sample
        boolean[][] one = {{F, T, F, F, T, F}};
        assertEquals(1 - 6.0 / 15, Evaluation.sampled(one, List.of(2)).passAtK().get(2), 1e-15);
        int all = 0;
        int hit = 0;
        for (int i = 0; i < 6; i++) {
            for (int j = i + 1; j < 6; j++) {
                all++;
                hit += one[0][i] || one[0][j] ? 1 : 0;
            }
        }
        assertEquals((double) hit / all, Evaluation.sampled(one, List.of(2)).passAtK().get(2), 1e-15);
    }

    @Test
    void greedyOnly() {
        Evaluation e = Evaluation.greedy(new boolean[] {T, T, F});
        assertEquals(2.0 / 3, e.accuracy(), 1e-15);
        assertTrue(Double.isNaN(e.sampleAccuracy()));
        assertTrue(e.passAtK().isEmpty());
    }

    @Test
    void inconsistentInputsAreErrors() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Evaluation.sampled(new boolean[][] {{T, F, T, F}, {T, F}}, List.of(4)));
        assertTrue(e.getMessage().startsWith("problem 1"), e.getMessage());
        assertThrows(IllegalArgumentException.class,
                () -> Evaluation.of(new boolean[] {T}, new boolean[][] {{T}, {F}}, List.of(1)));
        assertThrows(IllegalArgumentException.class, () -> Evaluation.sampled(new boolean[0][], List.of(1)));
        assertThrows(IllegalArgumentException.class, () -> Evaluation.greedy(new boolean[0]));
    }
}
