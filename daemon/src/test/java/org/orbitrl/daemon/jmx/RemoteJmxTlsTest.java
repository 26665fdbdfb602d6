package org.orbitrl.daemon.jmx;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.KeyStore;
import java.util.List;
import java.util.Map;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;
import javax.rmi.ssl.SslRMIClientSocketFactory;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.testing.DaemonHarness;

/** Remote JMX with TLS: a client that trusts the daemon's certificate connects; a plain client cannot. */
class RemoteJmxTlsTest {
    @TempDir
    Path tmp;
    DaemonHarness h;
    SSLContext previous;

    @AfterEach
    void tearDown() throws Exception {
        if (h != null) {
            h.close();
        }
        if (previous != null) {
            SSLContext.setDefault(previous);
        }
    }

    @Test
    void tlsClientsConnectAndPlainClientsAreRefused() throws Exception {
        Path keystore = tmp.resolve("jmx.p12");
        String keytool = Path.of(System.getProperty("java.home"), "bin", "keytool").toString();
        Process p = new ProcessBuilder(keytool, "-genkeypair", "-alias", "orbit", "-keyalg", "EC", "-groupname", "secp256r1",
                "-dname", "CN=127.0.0.1", "-ext", "san=ip:127.0.0.1", "-validity", "2", "-storetype", "PKCS12",
                "-keystore", keystore.toString(), "-storepass", "changeit-123", "-keypass", "changeit-123")
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        assertEquals(0, p.waitFor(), "keytool: " + out);
        Path pass = tmp.resolve("keystore.pass");
        Files.writeString(pass, "changeit-123\n");
        Path password = tmp.resolve("jmx.password");
        Files.writeString(password, "admin s3cret\n");
        Files.setPosixFilePermissions(password, PosixFilePermissions.fromString("rw-------"));
        Path access = tmp.resolve("jmx.access");
        Files.writeString(access, "admin readwrite\n");
        // Clients of this JVM trust the daemon's certificate (set before any TLS socket exists:
        // the JDK caches its default socket factory).
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(keystore)) {
            ks.load(in, "changeit-123".toCharArray());
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        SSLContext trusting = SSLContext.getInstance("TLS");
        trusting.init(null, tmf.getTrustManagers(), null);
        previous = SSLContext.getDefault();
        SSLContext.setDefault(trusting);
        int port = RemoteJmxTest.freePort();
        h = new DaemonHarness(tmp, "jmx:\n  remote:\n    enabled: true\n    port: " + port + "\n    password_file: "
                + password + "\n    access_file: " + access + "\n    tls:\n      enabled: true\n      keystore: " + keystore
                + "\n      keystore_password_file: " + pass + "\n").start();
        String url = h.daemon.remoteJmxUrl();

        // A plain client speaks plain RMI to a TLS socket: refused.
        assertThrows(IOException.class, () -> JMXConnectorFactory.connect(new JMXServiceURL(url),
                Map.of(JMXConnector.CREDENTIALS, new String[] {"admin", "s3cret"})));

        try (JMXConnector c = JMXConnectorFactory.connect(new JMXServiceURL(url), Map.of(
                JMXConnector.CREDENTIALS, new String[] {"admin", "s3cret"},
                "com.sun.jndi.rmi.factory.socket", new SslRMIClientSocketFactory()))) {
            String[] devices = (String[]) c.getMBeanServerConnection().getAttribute(JmxAgent.daemonName(), "Devices");
            assertEquals(List.of("cpu:0"), List.of(devices));
            assertTrue((Boolean) c.getMBeanServerConnection().getAttribute(JmxAgent.daemonName(), "RemoteJmxEnabled"));
        }
    }
}
