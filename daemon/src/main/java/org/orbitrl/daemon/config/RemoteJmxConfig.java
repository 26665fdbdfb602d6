package org.orbitrl.daemon.config;

import java.nio.file.Path;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * Remote JMX, off by default (local attach only). When on, every connection authenticates
 * against the password file and is authorised by the access file ({@code readonly} or
 * {@code readwrite} per user); TLS is optional.
 *
 * @param enabled      open a JMX connector on the network
 * @param host         address to listen on
 * @param port         RMI registry and connector port
 * @param passwordFile {@code user password} lines; must not be readable by group or others
 * @param accessFile   {@code user readonly|readwrite} lines
 * @param tls          TLS settings
 */
public record RemoteJmxConfig(boolean enabled, String host, int port, Path passwordFile, Path accessFile, TlsConfig tls) {
    public RemoteJmxConfig {
        new Checks()
                .notBlank("host", host)
                .range("port", port, 0, 65535)
                .require(!enabled || passwordFile != null, "password_file",
                        "is required when remote JMX is enabled (remote JMX never runs without authentication)")
                .require(!enabled || accessFile != null, "access_file", "is required when remote JMX is enabled")
                .done();
    }

    /**
     * As the configuration file writes it: {@code jmx.remote off}, or where it listens and the files it
     * authenticates with ({@code jmx.remote 127.0.0.1:9010 (password_file /etc/orbit/jmx.password, ...)}).
     */
    @Override
    public String toString() {
        return enabled ? "jmx.remote " + host + ":" + port + " (password_file " + passwordFile + ", access_file "
                + accessFile + ", " + tls + ")" : "jmx.remote off";
    }

    static RemoteJmxConfig read(Section s, Path base) {
        boolean enabled = s.bool("enabled", false);
        String host = s.string("host", "127.0.0.1");
        int port = s.integer("port", 9010);
        Path password = OrbitConfig.path(s, "password_file", base);
        Path access = OrbitConfig.path(s, "access_file", base);
        TlsConfig tls = TlsConfig.read(s.section("tls"), base);
        if (tls == null) {
            s.rejectUnknownKeys();
            return null;
        }
        return s.build(() -> new RemoteJmxConfig(enabled, host, port, password, access, tls));
    }
}
