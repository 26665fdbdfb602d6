package org.orbitrl.daemon.state;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class StateStoreTest {
    @TempDir
    Path tmp;

    static JobRecord record(String name, long step) {
        return new JobRecord(1, name, "/etc/orbit/jobs.d/" + name + ".yaml", "ab", "RUNNING", "", false, step, 100, step,
                0x4a00000000L + step, step * 16, step - step % 10, "ckpt", "2026-01-01T00:00:00Z",
                Map.of("reward_mean", 0.25), Map.of("1", 0.5), "runner: rl\n", "2026-01-01T00:00:01Z");
    }

    @Test
    void recordsSurviveACleanCloseAndMarkIt() throws Exception {
        try (StateStore s = StateStore.open(tmp, 64)) {
            assertTrue(s.persistent());
            for (int i = 0; i < 40; i++) {
                s.put(record("job-" + i, i));
            }
            s.put(record("job-7", 77));
            s.remove("job-3");
            assertFalse(Files.exists(tmp.resolve("clean-shutdown")), "no clean marker while open");
        }
        assertTrue(Files.exists(tmp.resolve("clean-shutdown")));
        try (StateStore s = StateStore.open(tmp, 64)) {
            assertEquals(39, s.all().size());
            assertEquals(record("job-7", 77), s.get("job-7").orElseThrow());
            assertTrue(s.get("job-3").isEmpty());
            assertEquals(0x4a00000000L + 12, s.get("job-12").orElseThrow().consumedIndex());
        }
    }
}
