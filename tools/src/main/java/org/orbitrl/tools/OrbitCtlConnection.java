package org.orbitrl.tools;

import com.sun.tools.attach.AttachNotSupportedException;
import com.sun.tools.attach.VirtualMachine;
import com.sun.tools.attach.VirtualMachineDescriptor;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;
import javax.rmi.ssl.SslRMIClientSocketFactory;
import picocli.CommandLine;
import picocli.CommandLine.Option;

/**
 * How orbitctl reaches the daemon: by default it attaches to the local daemon JVM (the Attach
 * API: same user, or root), found by its main class; {@code --pid} picks one; {@code --url}
 * connects to remote JMX with a user and a password file, optionally over TLS.
 */
final class OrbitCtlConnection {
    static final String DAEMON_MAIN = "org.orbitrl.daemon.Main";

    @Option(scope = CommandLine.ScopeType.INHERIT, names = "--pid", description = "Attach to the daemon JVM with this process id.")
    Long pid;

    @Option(scope = CommandLine.ScopeType.INHERIT, names = "--url", paramLabel = "URL",
            description = "Remote JMX address, e.g. service:jmx:rmi:///jndi/rmi://host:9010/jmxrmi.")
    String url;

    @Option(scope = CommandLine.ScopeType.INHERIT, names = "--user", description = "Remote JMX user (with --url).")
    String user;

    @Option(scope = CommandLine.ScopeType.INHERIT, names = "--password-file", paramLabel = "FILE",
            description = "File whose first line is the remote JMX password (with --url).")
    Path passwordFile;

    @Option(scope = CommandLine.ScopeType.INHERIT, names = "--tls", description = "Remote JMX over TLS (with --url); trust comes from --truststore or the JDK's.")
    boolean tls;

    @Option(scope = CommandLine.ScopeType.INHERIT, names = "--truststore", paramLabel = "FILE", description = "PKCS12 truststore holding the daemon's certificate.")
    Path truststore;

    @Option(scope = CommandLine.ScopeType.INHERIT, names = "--truststore-password-file", paramLabel = "FILE", description = "File holding the truststore password.")
    Path truststorePasswordFile;

    /** Connects, or throws with what to do about it. */
    JMXConnector connect() throws IOException {
        if (url != null) {
            return remote();
        }
        long target = pid != null ? pid : findLocalDaemon();
        try {
            VirtualMachine vm = VirtualMachine.attach(Long.toString(target));
            try {
                return JMXConnectorFactory.connect(new JMXServiceURL(vm.startLocalManagementAgent()));
            } finally {
                vm.detach();
            }
        } catch (AttachNotSupportedException | IOException e) {
            throw new IOException("cannot attach to process " + target + " (" + e.getMessage() + "); run orbitctl as the"
                    + " daemon's user (sudo -u orbit orbitctl ...) or root, or use --url", e);
        }
    }

    private JMXConnector remote() throws IOException {
        Map<String, Object> env = new HashMap<>();
        if (user != null) {
            if (passwordFile == null) {
                throw new IOException("--user needs --password-file (passwords are not taken on the command line)");
            }
            env.put(JMXConnector.CREDENTIALS, new String[] {user, firstLine(passwordFile)});
        }
        if (tls) {
            if (truststore != null) {
                System.setProperty("javax.net.ssl.trustStore", truststore.toString());
                System.setProperty("javax.net.ssl.trustStoreType", "PKCS12");
                if (truststorePasswordFile != null) {
                    System.setProperty("javax.net.ssl.trustStorePassword", firstLine(truststorePasswordFile));
                }
            }
            env.put("com.sun.jndi.rmi.factory.socket", new SslRMIClientSocketFactory());
        }
        try {
            return JMXConnectorFactory.connect(new JMXServiceURL(url), env);
        } catch (SecurityException e) {
            throw new IOException("the daemon at " + url + " refused the connection: " + e.getMessage(), e);
        }
    }

    private static long findLocalDaemon() throws IOException {
        List<VirtualMachineDescriptor> daemons = VirtualMachine.list().stream()
                .filter(d -> d.displayName().startsWith(DAEMON_MAIN)).toList();
        if (daemons.isEmpty()) {
            throw new IOException("no Orbit daemon runs as this user on this host (looked for " + DAEMON_MAIN
                    + "); run orbitctl as the daemon's user (sudo -u orbit orbitctl ...), or use --pid or --url");
        }
        if (daemons.size() > 1) {
            throw new IOException("several Orbit daemons run here (pids " + String.join(", ",
                    daemons.stream().map(VirtualMachineDescriptor::id).toList()) + "); pick one with --pid");
        }
        return Long.parseLong(daemons.getFirst().id());
    }

    private static String firstLine(Path file) throws IOException {
        List<String> lines = Files.readAllLines(file, StandardCharsets.UTF_8);
        if (lines.isEmpty()) {
            throw new IOException(file + " is empty");
        }
        return lines.getFirst();
    }
}
