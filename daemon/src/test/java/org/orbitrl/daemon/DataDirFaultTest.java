package org.orbitrl.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.management.MBeanServerConnection;
import javax.management.openmbean.CompositeData;
import javax.management.remote.JMXConnector;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.jmx.JmxAgent;
import org.orbitrl.daemon.testing.ChildDaemon;
import org.orbitrl.daemon.testing.DaemonHarness;
import org.orbitrl.daemon.testing.JmxAttach;

/**
 * A full disk under a job and a read-only data directory, for real: the daemon runs in a child
 * JVM in its own mount namespace ({@code unshare -m}, so the mounts vanish with it) on a small
 * tmpfs. The job fails with the reason; the daemon keeps serving JMX and other jobs, and exits 0
 * on SIGTERM. Needs root and mount namespaces; skipped with a message otherwise.
 */
class DataDirFaultTest {
    @TempDir
    Path tmp;

    @BeforeAll
    static void needsMountNamespaces() throws Exception {
        boolean ok;
        try {
            Process p = new ProcessBuilder("unshare", "--mount", "--propagation", "private", "sh", "-c",
                    "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs \"$d\" && umount \"$d\" && rmdir \"$d\"")
                    .redirectErrorStream(true).start();
            p.getInputStream().readAllBytes();
            ok = p.waitFor() == 0;
        } catch (IOException e) {
            ok = false;
        }
        Assumptions.assumeTrue(ok, "skipped: needs root and mount namespaces (unshare --mount) to mount a small tmpfs");
    }

    Path config(Path jobs) throws IOException {
        Path config = tmp.resolve("orbit.yaml");
        Files.writeString(config, "data_dir: " + tmp.resolve("data") + "\njobs_dir: " + jobs + "\ndevices: [cpu:0, cpu:1]\n"
                + "watch: {debounce: 100ms}\nlog: {level: info}\n");
        return config;
    }

    static List<String> underTmpfs(Path mountPoint, String size, boolean readOnly) {
        String script = "mount -t tmpfs -o size=" + size + " tmpfs \"$0\""
                + (readOnly ? " && mount -o remount,ro \"$0\"" : "") + " && exec \"$@\"";
        return List.of("unshare", "--mount", "--propagation", "private", "sh", "-c", script, mountPoint.toString());
    }

    @Test
    void aFullDiskFailsTheJobWithTheReasonAndTheDaemonKeepsServing() throws Exception {
        Path jobs = Files.createDirectories(tmp.resolve("jobs.d"));
        Path fullDir = Files.createDirectories(tmp.resolve("data/jobs/full"));
        Files.writeString(jobs.resolve("full.yaml"), DaemonHarness.ledgerJob(100_000, "checkpoint: {interval: 5}\n"));
        Files.writeString(jobs.resolve("other.yaml"), DaemonHarness.ledgerJob(100_000, "checkpoint: {interval: 5}\n"));
        try (ChildDaemon d = ChildDaemon.start(config(jobs), tmp.resolve("full.log"),
                List.of("-Dorbit.test.ledger.stepMillis=20"), underTmpfs(fullDir, "3m", false))) {
            assertTrue(d.awaitLog("job full step 10/", Duration.ofSeconds(60)), d.output());
            Process fill = new ProcessBuilder("nsenter", "--target", Long.toString(d.pid()), "--mount", "--", "sh", "-c",
                    "dd if=/dev/zero of=" + fullDir.resolve("filler") + " bs=64k 2>/dev/null; df -k " + fullDir)
                    .redirectErrorStream(true).start();
            String df = new String(fill.getInputStream().readAllBytes());
            fill.waitFor();
            assertTrue(d.awaitLog("job full: running -> failed (", Duration.ofSeconds(30)), df + "\n" + d.output());
            Matcher m = Pattern.compile("job full: running -> failed \\((.*)\\)").matcher(d.output());
            assertTrue(m.find());
            String reason = m.group(1);
            assertTrue(reason.contains("No space left on device") || reason.contains("disk holding the data directory is probably full"),
                    reason);
            long otherBefore = lastStep(d.output(), "other");
            try (JMXConnector c = JmxAttach.connect(d.pid())) {
                MBeanServerConnection mbs = c.getMBeanServerConnection();
                assertEquals("failed", mbs.getAttribute(JmxAgent.jobName("full"), "State"));
                assertEquals(reason, mbs.getAttribute(JmxAgent.jobName("full"), "Reason"));
                assertEquals("running", mbs.getAttribute(JmxAgent.jobName("other"), "State"));
            }
            assertTrue(d.awaitLog("job other step " + (otherBefore + 5) + "/", Duration.ofSeconds(30)),
                    "the other job keeps training");
            assertEquals(0, d.terminate(Duration.ofSeconds(30)), d.output());
            System.out.println("disk full: job failed with '" + reason + "'; the daemon kept serving and exited 0");
        }
    }

    @Test
    void aReadOnlyDataDirectoryFailsJobsWithTheReasonAndTheDaemonKeepsServing() throws Exception {
        Path jobs = Files.createDirectories(tmp.resolve("jobs.d"));
        Path data = Files.createDirectories(tmp.resolve("data"));
        Files.writeString(jobs.resolve("ro.yaml"), DaemonHarness.ledgerJob(10, ""));
        try (ChildDaemon d = ChildDaemon.start(config(jobs), tmp.resolve("ro.log"), List.of(),
                underTmpfs(data, "1m", true))) {
            assertTrue(d.awaitLog("job ro: queued -> failed (", Duration.ofSeconds(60)), d.output());
            String out = d.output();
            assertTrue(out.contains("job ro: queued -> failed (the data directory " + data + " cannot be written ("), out);
            assertTrue(out.contains("Read-only file system"), out);
            try (JMXConnector c = JmxAttach.connect(d.pid())) {
                MBeanServerConnection mbs = c.getMBeanServerConnection();
                String problem = (String) mbs.getAttribute(JmxAgent.daemonName(), "DataDirProblem");
                assertTrue(problem.contains("Read-only file system"), problem);
                CompositeData[] list = (CompositeData[]) mbs.getAttribute(JmxAgent.daemonName(), "Jobs");
                assertEquals("failed", list[0].get("state"));
            }
            assertEquals(0, d.terminate(Duration.ofSeconds(30)), d.output());
            System.out.println("read-only data dir: " + out.lines().filter(l -> l.contains("ro: queued -> failed"))
                    .findFirst().orElse(""));
        }
    }

    static long lastStep(String out, String job) {
        Matcher m = Pattern.compile("job " + job + " step (\\d+)/").matcher(out);
        long last = 0;
        while (m.find()) {
            last = Math.max(last, Long.parseLong(m.group(1)));
        }
        return last;
    }
}
