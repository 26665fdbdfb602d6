package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.orbitrl.scheduler.log.FinishReason;
import org.orbitrl.scheduler.log.SampleGroup;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.log.SampleTimings;
import org.orbitrl.scheduler.log.VersionSpan;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The staleness bound on groups whose samples span adapter versions, against a count done by
 * hand over every token: a group goes if any token is older than {@code current - bound}, whole;
 * the kept tokens' mean and largest staleness are {@code current - version} over them.
 */
class StalenessTest {

    /** A sample of {@code len} tokens: version {@code v0} from token 0, {@code v1} from token {@code switchAt}. */
    private static SampleRecord sample(long group, int index, int len, long v0, int switchAt, long v1) {
        List<VersionSpan> spans = switchAt < len && v1 != v0
                ? List.of(new VersionSpan(0, v0), new VersionSpan(switchAt, v1)) : List.of(new VersionSpan(0, v0));
        boolean[] mask = new boolean[len];
        java.util.Arrays.fill(mask, true);
        return SampleRecord.builder().job("j").promptId("p" + group).group(group, index, 2).promptTokens(1, 2, 3)
                .response(new int[len], new float[len], mask).versions(spans).reward(0, Map.of())
                .finishReason(FinishReason.LENGTH).temperature(1f).timings(new SampleTimings(0, 1, 0)).build();
    }

    @Test
    void dropsWholeGroupsWithAnyTokenPastTheBound() {
        SplittableRandom rnd = new SplittableRandom(11);
        long current = 9;
        for (int bound = 0; bound <= 3; bound++) {
            List<SampleGroup> groups = new ArrayList<>();
            long wantDropped = 0;
            long wantKept = 0;
            long sum = 0;
            long max = 0;
            long tokens = 0;
            for (long g = 0; g < 12; g++) {
                List<SampleRecord> s = new ArrayList<>();
                boolean stale = false;
                for (int i = 0; i < 2; i++) {
                    int len = 3 + rnd.nextInt(6);
                    long v0 = current - rnd.nextInt(5);
                    long v1 = Math.min(current, v0 + rnd.nextInt(2));
                    int at = 1 + rnd.nextInt(len);
                    s.add(sample(g, i, len, v0, at, v1));
                    stale |= current - v0 > bound;        // v0 <= v1: the first span is the oldest
                }
                groups.add(new SampleGroup(s));
                if (stale) {
                    wantDropped += s.size();
                    continue;
                }
                wantKept += s.size();
                for (SampleRecord r : s) {
                    for (int t = 0; t < r.responseLength(); t++) {
                        long st = current - r.versionOf(t);
                        sum += st;
                        max = Math.max(max, st);
                        tokens++;
                    }
                }
            }
            Staleness got = Staleness.filter(groups, current, bound);
            assertEquals(wantDropped, got.dropped(), "bound " + bound + ": samples dropped");
            assertEquals(wantKept, got.kept().size(), "bound " + bound + ": samples kept");
            assertEquals(max, got.maxStaleness(), "bound " + bound + ": largest staleness kept");
            assertEquals(tokens == 0 ? 0 : sum / (double) tokens, got.meanStaleness(), 1e-12, "bound " + bound + ": mean");
            for (SampleRecord r : got.kept()) {
                assertEquals(true, current - r.oldestVersion() <= bound, "a kept sample is within the bound");
            }
        }
    }
}
