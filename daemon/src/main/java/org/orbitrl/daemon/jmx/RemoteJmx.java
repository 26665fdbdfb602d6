package org.orbitrl.daemon.jmx;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.ObjectInputFilter;
import java.io.ObjectInputStream;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermission;
import java.rmi.NoSuchObjectException;
import java.rmi.Remote;
import java.rmi.registry.LocateRegistry;
import java.rmi.registry.Registry;
import java.rmi.server.RMIClientSocketFactory;
import java.rmi.server.RMIServerSocketFactory;
import java.rmi.server.UnicastRemoteObject;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import javax.management.MBeanServer;
import javax.management.remote.JMXConnectorServer;
import javax.management.remote.JMXConnectorServerFactory;
import javax.management.remote.JMXServiceURL;
import javax.management.remote.rmi.RMIConnectorServer;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.TrustManagerFactory;
import javax.rmi.ssl.SslRMIClientSocketFactory;
import org.orbitrl.daemon.config.OrbitConfig;
import org.orbitrl.daemon.config.RemoteJmxConfig;
import org.orbitrl.daemon.config.TlsConfig;

/**
 * Remote JMX over RMI: a registry and the connector on one port, bound to the configured address,
 * optionally TLS. Authentication is the JDK's password-file login ({@code jmx.remote.x.password.file});
 * authorisation is the JDK's access file ({@code jmx.remote.x.access.file}: {@code readonly} users
 * read attributes, {@code readwrite} users may also write them and invoke operations).
 *
 * <p>The RMI stubs handed to clients carry {@code java.rmi.server.hostname}; when it is not set it
 * is set to the configured host so that clients connect to the address the daemon listens on.
 */
final class RemoteJmx implements AutoCloseable {
    private final Registry registry;
    private final JMXConnectorServer server;
    private final JMXServiceURL url;

    private RemoteJmx(Registry registry, JMXConnectorServer server, JMXServiceURL url) {
        this.registry = registry;
        this.server = server;
        this.url = url;
    }

    static RemoteJmx start(RemoteJmxConfig c, MBeanServer mbs) throws IOException {
        requireOwnerOnly(c.passwordFile(), "password_file");
        if (!Files.isReadable(c.accessFile())) {
            throw new IOException("jmx.remote.access_file " + c.accessFile() + " cannot be read");
        }
        InetAddress addr = InetAddress.getByName(c.host());
        if (System.getProperty("java.rmi.server.hostname") == null && !addr.isAnyLocalAddress()) {
            System.setProperty("java.rmi.server.hostname", c.host());
        }
        TlsConfig tls = c.tls();
        SSLContext ssl = tls.enabled() ? sslContext(tls) : null;
        RMIServerSocketFactory ssf = new BoundServerSocketFactory(addr, ssl, tls.enabled() && tls.needClientAuth());
        RMIClientSocketFactory csf = tls.enabled() ? new SslRMIClientSocketFactory() : null;
        Registry registry = LocateRegistry.createRegistry(c.port(), csf, ssf);
        try {
            Map<String, Object> env = new HashMap<>();
            env.put("jmx.remote.x.password.file", c.passwordFile().toString());
            env.put("jmx.remote.x.access.file", c.accessFile().toString());
            env.put(RMIConnectorServer.RMI_SERVER_SOCKET_FACTORY_ATTRIBUTE, ssf);
            if (csf != null) {
                env.put(RMIConnectorServer.RMI_CLIENT_SOCKET_FACTORY_ATTRIBUTE, csf);
            }
            String hp = hostForUrl(c.host()) + ":" + c.port();
            // The connector exports its server object on the registry's port; its stub is bound
            // straight into the registry object (no network bind, which TLS would make the daemon
            // trust its own certificate for).
            JMXConnectorServer server = JMXConnectorServerFactory.newJMXConnectorServer(
                    new JMXServiceURL("service:jmx:rmi://" + hp), env, mbs);
            server.start();
            registry.rebind("jmxrmi", stubOf(server.getAddress()));
            JMXServiceURL url = new JMXServiceURL("service:jmx:rmi:///jndi/rmi://" + hp + "/jmxrmi");
            return new RemoteJmx(registry, server, url);
        } catch (IOException | RuntimeException e) {
            UnicastRemoteObject.unexportObject(registry, true);
            throw e;
        }
    }

    /** The server stub a started connector encodes in its {@code /stub/} address. */
    private static Remote stubOf(JMXServiceURL address) throws IOException {
        String path = address.getURLPath();
        if (!path.startsWith("/stub/")) {
            throw new IOException("unexpected JMX connector address " + address);
        }
        byte[] bytes = Base64.getDecoder().decode(path.substring("/stub/".length()));
        try (ObjectInputStream in = new ObjectInputStream(new ByteArrayInputStream(bytes))) {
            in.setObjectInputFilter(info -> info.serialClass() == null || info.serialClass().getName().startsWith("java.")
                    || info.serialClass().getName().startsWith("javax.") || info.serialClass().getName().startsWith("jdk.")
                    || info.serialClass().getName().startsWith("sun.rmi.") || info.serialClass().isArray()
                    ? ObjectInputFilter.Status.ALLOWED : ObjectInputFilter.Status.REJECTED);
            return (Remote) in.readObject();
        } catch (ClassNotFoundException e) {
            throw new IOException("cannot decode the JMX connector stub", e);
        }
    }

    JMXServiceURL url() {
        return url;
    }

    @Override
    public void close() throws IOException {
        try {
            server.stop();
        } finally {
            try {
                UnicastRemoteObject.unexportObject(registry, true);
            } catch (NoSuchObjectException e) {
                // already gone: nothing to release
            }
        }
    }

    private static String hostForUrl(String host) {
        return host.contains(":") && !host.startsWith("[") ? "[" + host + "]" : host;
    }

    /** The password file must not be readable by anyone but its owner (as the JDK's own agent requires). */
    private static void requireOwnerOnly(Path file, String key) throws IOException {
        if (!Files.isReadable(file)) {
            throw new IOException("jmx.remote." + key + " " + file + " cannot be read");
        }
        try {
            Set<PosixFilePermission> p = Files.getPosixFilePermissions(file);
            if (p.contains(PosixFilePermission.GROUP_READ) || p.contains(PosixFilePermission.OTHERS_READ)
                    || p.contains(PosixFilePermission.GROUP_WRITE) || p.contains(PosixFilePermission.OTHERS_WRITE)) {
                throw new IOException("jmx.remote." + key + " " + file + " is readable or writable by group or others;"
                        + " restrict it to its owner: chmod 600 " + file);
            }
        } catch (UnsupportedOperationException e) {
            // not a POSIX file system: nothing to check
        }
    }

    private static SSLContext sslContext(TlsConfig tls) throws IOException {
        try {
            char[] pass = OrbitConfig.readSecret(tls.keystorePasswordFile()).toCharArray();
            KeyStore ks = KeyStore.getInstance("PKCS12");
            try (InputStream in = Files.newInputStream(tls.keystore())) {
                ks.load(in, pass);
            }
            KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(ks, pass);
            TrustManagerFactory tmf = null;
            if (tls.needClientAuth()) {
                char[] tpass = OrbitConfig.readSecret(tls.truststorePasswordFile()).toCharArray();
                KeyStore ts = KeyStore.getInstance("PKCS12");
                try (InputStream in = Files.newInputStream(tls.truststore())) {
                    ts.load(in, tpass);
                }
                tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
                tmf.init(ts);
            }
            SSLContext ctx = SSLContext.getInstance("TLS");
            ctx.init(kmf.getKeyManagers(), tmf == null ? null : tmf.getTrustManagers(), null);
            return ctx;
        } catch (GeneralSecurityException e) {
            throw new IOException("cannot set up TLS for remote JMX from " + tls.keystore() + ": " + e.getMessage(), e);
        }
    }

    /** Server sockets bound to one address, plain or TLS. Equal factories let RMI share one port. */
    private static final class BoundServerSocketFactory implements RMIServerSocketFactory {
        private final InetAddress addr;
        private final SSLContext ssl;
        private final boolean needClientAuth;

        BoundServerSocketFactory(InetAddress addr, SSLContext ssl, boolean needClientAuth) {
            this.addr = addr;
            this.ssl = ssl;
            this.needClientAuth = needClientAuth;
        }

        @Override
        public ServerSocket createServerSocket(int port) throws IOException {
            if (ssl == null) {
                return new ServerSocket(port, 50, addr);
            }
            SSLServerSocket s = (SSLServerSocket) ssl.getServerSocketFactory().createServerSocket(port, 50, addr);
            s.setNeedClientAuth(needClientAuth);
            return s;
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof BoundServerSocketFactory f && f.addr.equals(addr) && f.ssl == ssl
                    && f.needClientAuth == needClientAuth;
        }

        @Override
        public int hashCode() {
            return Objects.hash(addr, System.identityHashCode(ssl), needClientAuth);
        }
    }
}
