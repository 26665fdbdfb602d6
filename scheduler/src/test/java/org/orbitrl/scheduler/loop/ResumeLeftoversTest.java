package org.orbitrl.scheduler.loop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.scheduler.log.AdapterVersionEvent;
import org.orbitrl.scheduler.log.SampleGroups;
import org.orbitrl.scheduler.log.SampleLog;
import org.orbitrl.scheduler.log.SampleLogWriter;

/** A resumed job counts what its sample log holds past the checkpoint's read position, and the versions that made it. */
class ResumeLeftoversTest {
    @TempDir
    Path dir;

    @Test
    void theGroupsPastTheReadPositionAreCountedWithTheirVersions() {
        SplittableRandom rnd = new SplittableRandom(7);
        List<Long> indices = new ArrayList<>();
        try (SampleLog log = SampleLog.open(dir.resolve("samples")); SampleLogWriter w = log.writer()) {
            for (int g = 0; g < 9; g++) {   // groups of 4 by versions 0, 0, 0, 1, 1, 1, 2, 2, 2; a version event after each third
                indices.add(w.append(SampleGroups.random(rnd, g, 4, g / 3)));
                if (g % 3 == 2) {
                    indices.add(w.append(AdapterVersionEvent.of(g / 3 + 1, g / 3 + 1, "sha256:00", "", 10, 5)));
                }
            }
            // read through group 4 (entry 5): groups 5 to 8 are left, by versions 1, 2, 2, 2
            Optional<ResumeLeftovers> left = ResumeLeftovers.of(log, indices.get(5));
            assertEquals(Optional.of(new ResumeLeftovers(4, 16, 1, 2)), left, "the event among them is no group");
            String line = left.orElseThrow().describe(6, 3);
            assertEquals("4 groups (16 samples) logged after the checkpoint of step 6 train first: rolled out before the"
                    + " restart by adapter versions 1 to 2 (the restored adapter: version 3); the train/rollout gap of those"
                    + " steps shows how far their policy is from it", line);
            assertEquals(Optional.of(new ResumeLeftovers(1, 4, 2, 2)), ResumeLeftovers.of(log, indices.get(indices.size() - 3)),
                    "the last group alone (its event after it is no group)");
            assertTrue(ResumeLeftovers.of(log, indices.getLast()).isEmpty(), "nothing past the last entry");
            assertTrue(ResumeLeftovers.of(log, SampleLog.NO_INDEX).map(l -> l.groups() == 9 && l.oldestVersion() == 0).orElse(false),
                    "from the start: every group");
            assertEquals("1 group (4 samples) logged after the checkpoint of step 8 train first: rolled out before the restart"
                    + " by adapter version 2 (the restored adapter: version 3); the train/rollout gap of those steps shows"
                    + " how far their policy is from it", new ResumeLeftovers(1, 4, 2, 2).describe(8, 3));
            assertEquals("9 groups (36 samples) logged before the restart, with no checkpoint, train first: rolled out before"
                    + " the restart by adapter versions 0 to 2 (the new adapter: version 0); the train/rollout gap of those"
                    + " steps shows how far their policy is from it",
                    ResumeLeftovers.of(log, SampleLog.NO_INDEX).orElseThrow().describe(-1, 0));
        }
    }
}
