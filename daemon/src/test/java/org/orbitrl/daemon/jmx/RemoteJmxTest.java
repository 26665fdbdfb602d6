package org.orbitrl.daemon.jmx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.Map;
import javax.management.Attribute;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.DaemonException;
import org.orbitrl.daemon.jobs.JobState;
import org.orbitrl.daemon.testing.DaemonHarness;
import org.orbitrl.daemon.testing.LedgerRunner;

/** Remote JMX through a real JMXConnector over loopback: authentication and read-only vs control roles. */
class RemoteJmxTest {
    @TempDir
    Path tmp;
    DaemonHarness h;

    @AfterEach
    void tearDown() {
        LedgerRunner.stepDelayMillis = 0;
        if (h != null) {
            h.close();
        }
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    String remoteConfig(int port, String passwordPerms) throws IOException {
        Path password = tmp.resolve("jmx.password");
        Files.writeString(password, "admin s3cret-admin\nviewer s3cret-viewer\n");
        Files.setPosixFilePermissions(password, PosixFilePermissions.fromString(passwordPerms));
        Path access = tmp.resolve("jmx.access");
        Files.writeString(access, "admin readwrite\nviewer readonly\n");
        return "jmx:\n  remote:\n    enabled: true\n    host: 127.0.0.1\n    port: " + port + "\n"
                + "    password_file: " + password + "\n    access_file: " + access + "\n";
    }

    static JMXConnector connect(String url, String user, String password) throws IOException {
        Map<String, Object> env = user == null ? Map.of() : Map.of(JMXConnector.CREDENTIALS, new String[] {user, password});
        return JMXConnectorFactory.connect(new JMXServiceURL(url), env);
    }

    @Test
    void wrongPasswordsAreRefusedAndReadOnlyUsersCannotControlJobs() throws Exception {
        LedgerRunner.stepDelayMillis = 20;
        int port = freePort();
        h = new DaemonHarness(tmp, remoteConfig(port, "rw-------")).start();
        String url = h.daemon.remoteJmxUrl();
        assertEquals("service:jmx:rmi:///jndi/rmi://127.0.0.1:" + port + "/jmxrmi", url);
        h.writeJob("remote", DaemonHarness.ledgerJob(100_000, ""));
        h.awaitState("remote", JobState.RUNNING);
        ObjectName job = JmxAgent.jobName("remote");

        SecurityException wrong = assertThrows(SecurityException.class, () -> connect(url, "admin", "guess"));
        assertTrue(wrong.getMessage().contains("Authentication failed"), wrong.getMessage());
        SecurityException none = assertThrows(SecurityException.class, () -> connect(url, null, null));
        assertTrue(none.getMessage().contains("Credentials required"), none.getMessage());
        assertThrows(SecurityException.class, () -> connect(url, "nobody", "s3cret-admin"));

        try (JMXConnector c = connect(url, "viewer", "s3cret-viewer")) {
            MBeanServerConnection mbs = c.getMBeanServerConnection();
            assertEquals("running", mbs.getAttribute(job, "State"));
            assertTrue((Long) mbs.getAttribute(JmxAgent.daemonName(), "UptimeSeconds") >= 0);
            SecurityException op = assertThrows(SecurityException.class, () -> mbs.invoke(job, "pause", null, null));
            assertTrue(op.getMessage().contains("Access denied"), op.getMessage());
            assertThrows(SecurityException.class, () -> mbs.setAttribute(job, new Attribute("Temperature", 0.3)));
            assertThrows(SecurityException.class, () -> mbs.invoke(job, "set", new Object[] {"lr", "1e-4"},
                    new String[] {String.class.getName(), String.class.getName()}));
        }
        assertEquals(JobState.RUNNING, h.job("remote").state(), "the read-only user changed nothing");
        assertEquals(1.0, h.job("remote").spec().sampling().temperature(), 0.0);

        try (JMXConnector c = connect(url, "admin", "s3cret-admin")) {
            MBeanServerConnection mbs = c.getMBeanServerConnection();
            mbs.setAttribute(job, new Attribute("Temperature", 0.3));
            assertEquals(0.3, (Double) mbs.getAttribute(job, "Temperature"), 0.0);
            Exception bad = assertThrows(Exception.class, () -> mbs.setAttribute(job, new Attribute("Temperature", 42.0)));
            assertTrue(messages(bad).contains("sampling.temperature: must be between 0 and 10, got 42"), messages(bad));
            mbs.invoke(job, "pause", null, null);
            h.awaitState("remote", JobState.PAUSED);
            mbs.invoke(job, "stop", null, null);
            h.awaitState("remote", JobState.STOPPED);
        }
    }

    @Test
    void aPasswordFileOthersCanReadIsRefused() throws Exception {
        int port = freePort();
        h = new DaemonHarness(tmp, remoteConfig(port, "rw-r--r--"));
        DaemonException e = assertThrows(DaemonException.class, h::start);
        assertEquals(DaemonException.OS, e.exitCode());
        assertTrue(e.getMessage().contains("is readable or writable by group or others; restrict it to its owner: chmod 600"),
                e.getMessage());
        h = null;
    }

    /** Every message along a cause chain (a remote client sees the validation error wrapped). */
    static String messages(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            sb.append(c.getClass().getSimpleName()).append(": ").append(c.getMessage()).append(" | ");
        }
        return sb.toString();
    }
}
