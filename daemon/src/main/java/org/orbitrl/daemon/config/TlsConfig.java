package org.orbitrl.daemon.config;

import java.nio.file.Path;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * TLS for remote JMX.
 *
 * @param enabled                 encrypt remote JMX (registry and connections)
 * @param keystore                PKCS12 keystore with the daemon's key and certificate
 * @param keystorePasswordFile    file whose first line is the keystore's password
 * @param needClientAuth          require clients to present a certificate the truststore trusts
 * @param truststore              PKCS12 truststore for client certificates (with need_client_auth)
 * @param truststorePasswordFile  file whose first line is the truststore's password
 */
public record TlsConfig(boolean enabled, Path keystore, Path keystorePasswordFile, boolean needClientAuth,
                        Path truststore, Path truststorePasswordFile) {
    public TlsConfig {
        new Checks()
                .require(!enabled || keystore != null, "keystore", "is required when TLS is enabled")
                .require(!enabled || keystorePasswordFile != null, "keystore_password_file",
                        "is required when TLS is enabled")
                .require(!enabled || !needClientAuth || truststore != null, "truststore",
                        "is required when need_client_auth is true")
                .require(!enabled || !needClientAuth || truststorePasswordFile != null, "truststore_password_file",
                        "is required when need_client_auth is true")
                .done();
    }

    /** As the configuration file writes it: {@code tls off}, or its keystore and client authentication. */
    @Override
    public String toString() {
        return !enabled ? "tls off" : "tls.keystore " + keystore + ", tls.need_client_auth " + needClientAuth
                + (needClientAuth ? ", tls.truststore " + truststore : "");
    }

    static TlsConfig read(Section s, Path base) {
        boolean enabled = s.bool("enabled", false);
        Path keystore = OrbitConfig.path(s, "keystore", base);
        Path keystorePass = OrbitConfig.path(s, "keystore_password_file", base);
        boolean needClientAuth = s.bool("need_client_auth", false);
        Path truststore = OrbitConfig.path(s, "truststore", base);
        Path truststorePass = OrbitConfig.path(s, "truststore_password_file", base);
        return s.build(() -> new TlsConfig(enabled, keystore, keystorePass, needClientAuth, truststore, truststorePass));
    }
}
