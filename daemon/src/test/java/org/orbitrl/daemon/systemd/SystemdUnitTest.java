package org.orbitrl.daemon.systemd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.config.OrbitConfig;

/** {@code systemd/orbit.service} against systemd's own checks, where systemd-analyze is installed. */
class SystemdUnitTest {
    static final Path REPO = Path.of("").toAbsolutePath().getParent();
    static final Path UNIT = REPO.resolve("systemd/orbit.service");

    @TempDir
    Path tmp;

    @BeforeAll
    static void needsSystemdAnalyze() {
        boolean found = false;
        for (String dir : System.getenv().getOrDefault("PATH", "/usr/bin:/bin").split(":")) {
            found |= Files.isExecutable(Path.of(dir, "systemd-analyze"));
        }
        Assumptions.assumeTrue(found, "skipped: systemd-analyze is not installed (apt-get install systemd)");
    }

    static String run(List<String> cmd, int[] exit) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        exit[0] = p.waitFor();
        return out;
    }

    @Test
    void verifyFindsNothingToComplainAbout() throws Exception {
        // verify checks that ExecStart exists; point it at the launcher in this checkout.
        Path dir = Files.createDirectories(tmp.resolve("units"));
        Path unit = dir.resolve("orbit.service");
        Files.writeString(unit, Files.readString(UNIT).replace("ExecStart=/opt/orbit/bin/orbitd",
                "ExecStart=" + REPO.resolve("systemd/orbitd")));
        int[] exit = new int[1];
        String out = run(List.of("systemd-analyze", "verify", unit.toString()), exit);
        assertEquals(0, exit[0], out);
        assertEquals("", out.strip(), "systemd-analyze verify warns:\n" + out);
    }

    @Test
    void exposureIsAtMostTwo() throws Exception {
        int[] exit = new int[1];
        String out = run(List.of("systemd-analyze", "security", "--offline=true", UNIT.toString()), exit);
        Matcher m = Pattern.compile("Overall exposure level for orbit.service: ([0-9.]+) (\\S+)").matcher(out);
        assertTrue(m.find(), out);
        double exposure = Double.parseDouble(m.group(1));
        assertTrue(exposure <= 2.0, "exposure " + exposure + " " + m.group(2) + ":\n" + out);
        System.out.println("systemd-analyze security --offline=true systemd/orbit.service: " + m.group(1) + " " + m.group(2));
    }

    @Test
    void theUnitSaysWhatTheDaemonNeeds() throws Exception {
        List<String> lines = Files.readAllLines(UNIT).stream().map(String::strip)
                .filter(l -> !l.startsWith("#") && l.contains("=")).toList();
        List<String> missing = new ArrayList<>();
        for (String want : List.of("Type=notify", "NotifyAccess=main", "User=orbit", "Group=orbit", "Restart=on-failure",
                "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/orbit", "PrivateTmp=yes",
                "StateDirectory=orbit", "KillSignal=SIGTERM", "ExecStart=/opt/orbit/bin/orbitd --config /etc/orbit/orbit.yaml")) {
            if (!lines.contains(want)) {
                missing.add(want);
            }
        }
        assertTrue(missing.isEmpty(), "missing from orbit.service: " + missing);
        // The daemon's own stop deadline fits inside systemd's.
        long stopSec = Long.parseLong(lines.stream().filter(l -> l.startsWith("TimeoutStopSec=")).findFirst().orElseThrow()
                .replaceAll("[^0-9]", ""));
        OrbitConfig conf = OrbitConfig.read(REPO.resolve("conf/orbit.yaml"));
        assertTrue(conf.shutdownTimeout().toSeconds() + 10 <= stopSec, "shutdown_timeout " + conf.shutdownTimeout()
                + " must leave room in TimeoutStopSec=" + stopSec);
        assertEquals(OrbitConfig.DEFAULT_FILE.getParent().resolve("jobs.d"), conf.jobsDir());
        assertEquals(Path.of("/var/lib/orbit"), conf.dataDir());
    }
}
