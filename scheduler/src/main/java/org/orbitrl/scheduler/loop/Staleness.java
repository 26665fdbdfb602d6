package org.orbitrl.scheduler.loop;

import org.orbitrl.scheduler.log.SampleGroup;
import org.orbitrl.scheduler.log.SampleRecord;

import java.util.ArrayList;
import java.util.List;

/**
 * The staleness bound applied to a step's groups: a group with any token made by a version older
 * than {@code current - bound} is dropped whole (its samples counted); the staleness of the kept
 * tokens is summarised.
 *
 * @param kept          the samples of the kept groups, in order
 * @param dropped       samples dropped
 * @param meanStaleness mean of {@code current - version} over the kept response tokens (0 if none)
 * @param maxStaleness  largest {@code current - version} over the kept response tokens
 */
record Staleness(List<SampleRecord> kept, long dropped, double meanStaleness, long maxStaleness) {

    static Staleness filter(List<SampleGroup> groups, long current, int bound) {
        List<SampleRecord> kept = new ArrayList<>();
        long dropped = 0;
        long sum = 0;
        long max = 0;
        long tokens = 0;
        for (SampleGroup g : groups) {
            long oldest = g.samples().stream().mapToLong(SampleRecord::oldestVersion).min().orElse(current);
            if (current - oldest > bound) {
                dropped += g.size();
                continue;
            }
            for (SampleRecord r : g.samples()) {
                kept.add(r);
                for (int t = 0; t < r.responseLength(); t++) {
                    long s = current - r.versionOf(t);
                    sum += s;
                    max = Math.max(max, s);
                    tokens++;
                }
            }
        }
        return new Staleness(kept, dropped, tokens == 0 ? 0 : sum / (double) tokens, max);
    }
}
