package org.orbitrl.daemon.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.orbitrl.scheduler.job.yaml.ConfigException;
import org.orbitrl.scheduler.job.yaml.ConfigProblem;

class OrbitConfigTest {
    static final Path CONF = Path.of("").toAbsolutePath().getParent().resolve("conf/orbit.yaml");

    static OrbitConfig parse(String yaml) throws ConfigException {
        return OrbitConfig.parse("orbit.yaml", yaml.getBytes(StandardCharsets.UTF_8), Path.of("/etc/orbit"));
    }

    @Test
    void theShippedFileHoldsEveryDefault() throws Exception {
        OrbitConfig shipped = OrbitConfig.read(CONF);
        assertEquals(OrbitConfig.defaults(CONF.getParent()), shipped);
        assertEquals(Path.of("/var/lib/orbit"), shipped.dataDir());
        assertEquals(Path.of("/etc/orbit/jobs.d"), shipped.jobsDir());
        assertEquals(Duration.ofMillis(500), shipped.watch().debounce());
        assertEquals(List.of("cpu:0"), shipped.devices());
        assertEquals(false, shipped.remoteJmx().enabled());
    }

    @Test
    void theShippedFileCommentsEveryKey() throws Exception {
        List<String> lines = Files.readAllLines(CONF);
        for (int i = 0; i < lines.size(); i++) {
            String l = lines.get(i);
            if (l.isBlank() || l.strip().startsWith("#") || l.strip().startsWith("-") || l.strip().endsWith(":")) {
                continue;
            }
            String prev = lines.get(i - 1).strip();
            assertTrue(prev.startsWith("#") || (!prev.isEmpty() && !prev.endsWith(":") && !prev.startsWith("-")),
                    "conf/orbit.yaml line " + (i + 1) + " has no comment above it: " + l);
        }
    }

    @Test
    void everyProblemIsReportedAtOnceWithLineNumbers() {
        ConfigException e = assertThrows(ConfigException.class, () -> parse("""
                data_dir: /srv/orbit
                devicez: [cuda:0]
                devices: [cuda:0, gpu1, cuda:0]
                watch:
                  debounce: 500
                shutdown_timeout: 2 hours
                jmx:
                  remote:
                    enabled: true
                    port: 70000
                log:
                  level: loud
                """));
        List<String> got = e.problems().stream().map(ConfigProblem::toString).toList();
        String all = String.join("\n", got);
        assertEquals(9, got.size(), all);
        assertTrue(got.get(0).startsWith("orbit.yaml:2:1: devicez: unknown key (did you mean 'devices'?)"), all);
        assertTrue(got.get(1).startsWith("orbit.yaml:3:1: devices: names a device twice"), all);
        assertTrue(got.get(2).startsWith("orbit.yaml:3:19: devices[1]: expected a device such as cpu:0 or cuda:3, got 'gpu1'"), all);
        assertTrue(got.get(3).startsWith("orbit.yaml:5:13: watch.debounce: duration '500' needs a unit"), all);
        assertTrue(got.get(4).startsWith("orbit.yaml:6:19: shutdown_timeout: unknown duration unit 'hours'"), all);
        assertTrue(got.get(5).startsWith("orbit.yaml:9:5: jmx.remote.password_file: is required when remote JMX is enabled"), all);
        assertTrue(got.get(6).startsWith("orbit.yaml:9:5: jmx.remote.access_file: is required when remote JMX is enabled"), all);
        assertTrue(got.get(7).startsWith("orbit.yaml:10:11: jmx.remote.port: must be between 0 and 65535, got 70000"), all);
        assertTrue(got.get(8).startsWith("orbit.yaml:12:10: log.level: expected one of trace, debug, info, warn, error"), all);
    }
}
