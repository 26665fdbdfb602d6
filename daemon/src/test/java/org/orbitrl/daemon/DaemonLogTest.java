package org.orbitrl.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.testing.ChildDaemon;

/** The daemon's log states its configuration and durations as the configuration file writes them. */
class DaemonLogTest {
    @TempDir
    Path tmp;

    @Test
    void theLogNamesTheConfigurationInTheFilesOwnTerms() throws Exception {
        Path config = tmp.resolve("orbit.yaml");
        Files.writeString(config, "data_dir: data\njobs_dir: jobs.d\ndevices: [cpu:0, cpu:1]\n"
                + "watch: {debounce: 250ms, rescan: 2m}\nshutdown_timeout: 20s\nmax_jobs: 64\n");
        try (ChildDaemon d = ChildDaemon.start(config, tmp.resolve("run.log"), List.of())) {
            assertTrue(d.awaitLog("Orbit daemon", Duration.ofSeconds(60)), d.diagnosis("the daemon did not start"));
            assertEquals(0, d.terminate(Duration.ofSeconds(30)), d.output());
            String log = d.output();
            String line = log.lines().filter(l -> l.contains("configuration " + config)).findFirst()
                    .orElseThrow(() -> new AssertionError("no configuration line:\n" + log));
            assertTrue(line.endsWith("configuration " + config + ": data_dir " + tmp.resolve("data") + ", jobs_dir "
                    + tmp.resolve("jobs.d") + ", devices [cpu:0, cpu:1], watch.debounce 250ms, watch.rescan 2m,"
                    + " shutdown_timeout 20s, max_jobs 64, jmx.remote off, log.level info, log.file (standard error),"
                    + " log.show_date_time false, log.progress true"), line);
            assertTrue(log.contains("stopping: checkpointing running jobs (up to 20s)"), log);
            assertFalse(log.contains("OrbitConfig[") || log.contains("PT20S"), log);
        }
    }
}
