package org.orbitrl.scheduler.log;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/** Seeded random sample groups for the sample log's tests and its readers'. */
public final class SampleGroups {
    private SampleGroups() {
    }

    /** A seeded random group: G samples with random tokens, log-probs, masks and rewards. */
    public static SampleGroup random(SplittableRandom rnd, long groupId, int g, long version) {
        List<SampleRecord> samples = new ArrayList<>();
        int[] prompt = rnd.ints(1 + rnd.nextInt(40), 0, 151_000).toArray();
        for (int i = 0; i < g; i++) {
            int n = 1 + rnd.nextInt(64);
            float[] lp = new float[n];
            boolean[] mask = new boolean[n];
            for (int t = 0; t < n; t++) {
                lp[t] = (float) -rnd.nextDouble(12);
                mask[t] = rnd.nextInt(10) != 0;
            }
            double correct = rnd.nextInt(2);
            samples.add(SampleRecord.builder().job("j").promptId("p" + groupId).group(groupId, i, g).promptTokens(prompt)
                    .response(rnd.ints(n, 0, 151_000).toArray(), lp, mask).version(version)
                    .reward(correct + 0.1, Map.of("correct", correct, "format", 0.1))
                    .finishReason(rnd.nextBoolean() ? FinishReason.STOP : FinishReason.LENGTH)
                    .timings(new SampleTimings(1000, 2000 + rnd.nextInt(1000), rnd.nextInt(100))).build());
        }
        return new SampleGroup(samples);
    }
}
