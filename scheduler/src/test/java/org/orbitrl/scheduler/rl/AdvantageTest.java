package org.orbitrl.scheduler.rl;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** GRPO, Dr.GRPO and RLOO advantages against hand-computed values; group validation. Tolerance 1e-7 abs. */
class AdvantageTest {
    private static final long[] ONE_GROUP = {7, 7, 7};
    private static final float[] R = {1, 0, 2};

    @Test
    void grpoWithStd() {
        // rewards [1, 0, 2], one group: mean 1, deviations [0, -1, 1],
        // unbiased std sqrt((0 + 1 + 1) / 2) = 1, eps 1e-6: A = [0, -1/(1+1e-6), 1/(1+1e-6)]
        float[] a = GrpoAdvantage.standard().compute(R, Groups.ofSize(ONE_GROUP, 3));
        RlAssert.close("GRPO", new double[] {0, -1 / (1 + 1e-6), 1 / (1 + 1e-6)}, a, 1e-7, 0);
    }

    @Test
    void grpoWithoutStdAndDrGrpo() {
        // mean baseline only: A = r - 1 = [0, -1, 1]
        float[] a = new GrpoAdvantage(false, 0).compute(R, Groups.ofSize(ONE_GROUP, 3));
        float[] d = new DrGrpoAdvantage().compute(R, Groups.ofSize(ONE_GROUP, 3));
        RlAssert.close("GRPO no std", new double[] {0, -1, 1}, a, 1e-7, 0);
        RlAssert.close("Dr.GRPO", new double[] {0, -1, 1}, d, 1e-7, 0);
    }

    @Test
    void rloo() {
        // A_0 = 1 - (0+2)/2 = 0;  A_1 = 0 - (1+2)/2 = -1.5;  A_2 = 2 - (1+0)/2 = 1.5
        float[] a = new RlooAdvantage().compute(R, Groups.ofSize(ONE_GROUP, 3));
        RlAssert.close("RLOO", new double[] {0, -1.5, 1.5}, a, 1e-7, 0);
    }

    @Test
    void interleavedGroupsAreKeyedById() {
        // ids [9, 4, 9, 4], rewards [1, 2, 3, 6]
        // group 9: [1, 3], mean 2, std sqrt(2) -> [-1/sqrt2, 1/sqrt2]
        // group 4: [2, 6], mean 4, std sqrt(8) -> [-2/sqrt8, 2/sqrt8] = [-1/sqrt2, 1/sqrt2]
        long[] ids = {9, 4, 9, 4};
        float[] r = {1, 2, 3, 6};
        Groups g = Groups.ofSize(ids, 2);
        assertEquals(2, g.count());
        assertEquals(9, g.id(0));
        assertArrayEquals(new int[] {1, 3}, g.members(1));
        double h = 1 / Math.sqrt(2);
        RlAssert.close("GRPO", new double[] {-h, -h, h, h}, new GrpoAdvantage(true, 0).compute(r, g), 1e-7, 0);
        // RLOO: group 9: 1-3 = -2, 3-1 = 2; group 4: 2-6 = -4, 6-2 = 4
        RlAssert.close("RLOO", new double[] {-2, -4, 2, 4}, new RlooAdvantage().compute(r, g), 1e-7, 0);
    }

    @Test
    void equalRewardsGiveExactZeros() {
        float[] r = {0.1f, 0.1f, 0.1f, 0.7f, 0.2f, 0.3f};
        long[] ids = {1, 1, 1, 2, 2, 2};
        for (AdvantageEstimator e : new AdvantageEstimator[] {new GrpoAdvantage(true, 0), new RlooAdvantage(),
                new DrGrpoAdvantage()}) {
            float[] a = e.compute(r, Groups.ofSize(ids, 3));
            assertArrayEquals(new float[] {0, 0, 0}, java.util.Arrays.copyOf(a, 3), e.toString());
            assertTrue(a[3] > 0 && a[4] < 0, e + " " + java.util.Arrays.toString(a));
        }
    }

    @Test
    void raggedGroupIsAnErrorNamingTheGroup() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Groups.ofSize(new long[] {3, 3, 3, 5, 5}, 3));
        assertTrue(e.getMessage().contains("group 5") && e.getMessage().contains("2 samples"), e.getMessage());
    }

    @Test
    void groupOfOneIsAnErrorForEveryBaseline() {
        Groups g = Groups.ragged(new long[] {3, 3, 8});
        float[] r = {1, 0, 1};
        for (AdvantageEstimator e : new AdvantageEstimator[] {GrpoAdvantage.standard(), new GrpoAdvantage(false, 0),
                new DrGrpoAdvantage(), new RlooAdvantage()}) {
            IllegalArgumentException x = assertThrows(IllegalArgumentException.class, () -> e.compute(r, g));
            assertTrue(x.getMessage().contains("group 8") && x.getMessage().contains("at least 2"), x.getMessage());
        }
        // ragged but every group >= 2 is allowed when asked for explicitly
        float[] a = new RlooAdvantage().compute(new float[] {1, 0, 1, 3, 0}, Groups.ragged(new long[] {3, 3, 3, 8, 8}));
        // group 3: [1,0,1] -> 1-0.5, 0-1, 1-0.5; group 8: [3,0] -> 3, -3
        RlAssert.close("ragged RLOO", new double[] {0.5, -1, 0.5, 3, -3}, a, 1e-7, 0);
    }

    @Test
    void badRewardsAreErrors() {
        Groups g = Groups.ofSize(ONE_GROUP, 3);
        assertThrows(IllegalArgumentException.class, () -> new RlooAdvantage().compute(new float[] {1, 2}, g));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> GrpoAdvantage.standard().compute(new float[] {1, Float.NaN, 2}, g));
        assertTrue(e.getMessage().contains("sample 1"), e.getMessage());
    }

    @Test
    void perTokenBroadcastRespectsMask() {
        float[] m = {1, 1, 0, 1, 0, 0};
        assertArrayEquals(new float[] {2, 2, 0, -1, 0, 0}, AdvantageEstimator.perToken(new float[] {2, -1}, m, 3));
    }
}
