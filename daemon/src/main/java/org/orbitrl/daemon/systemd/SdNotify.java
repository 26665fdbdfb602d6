package org.orbitrl.daemon.systemd;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.nio.charset.StandardCharsets;
import java.time.Duration;

/**
 * The systemd notification protocol ({@code sd_notify}): a datagram of {@code KEY=VALUE} lines
 * sent to the Unix socket named by {@code $NOTIFY_SOCKET}.
 *
 * <p>The JDK's {@code DatagramChannel} does not support Unix-domain sockets (JDK 25 has them for
 * stream sockets only; {@code DatagramChannel.open(StandardProtocolFamily.UNIX)} throws), and
 * running {@code systemd-notify} would make the sender a short-lived child process that systemd
 * may fail to attribute to the service (it would also need {@code NotifyAccess=all}). So the
 * datagram is sent from the daemon's own process through the FFM API ({@code socket}, {@code sendto}
 * of libc), which works with {@code NotifyAccess=main}. Abstract socket names ({@code @...}) are
 * supported.
 */
public final class SdNotify {
    private static final int AF_UNIX = 1;
    private static final int SOCK_DGRAM = 2;
    private static final int SOCK_CLOEXEC = 0x80000;
    private static final int MSG_NOSIGNAL = 0x4000;
    private static final int SUN_PATH = 108;

    private final String socketPath;

    private SdNotify(String socketPath) {
        this.socketPath = socketPath;
    }

    /** The notifier of this process's environment; {@link #enabled()} is false when not run by systemd. */
    public static SdNotify fromEnvironment() {
        return new SdNotify(System.getenv("NOTIFY_SOCKET"));
    }

    /** A notifier for an explicit socket (tests). */
    public static SdNotify to(String socketPath) {
        return new SdNotify(socketPath);
    }

    /** Whether there is a socket to notify. */
    public boolean enabled() {
        return socketPath != null && !socketPath.isEmpty();
    }

    /** {@code READY=1} with a status line. */
    public void ready(String status) throws IOException {
        send("READY=1\nSTATUS=" + status + "\nMAINPID=" + ProcessHandle.current().pid());
    }

    /** {@code STATUS=...}. */
    public void status(String status) throws IOException {
        send("STATUS=" + status);
    }

    /** {@code STOPPING=1}, and more time for the stop (checkpoints may take a while). */
    public void stopping(Duration extend) throws IOException {
        send("STOPPING=1\nEXTEND_TIMEOUT_USEC=" + extend.toNanos() / 1000);
    }

    /** {@code WATCHDOG=1}. */
    public void watchdog() throws IOException {
        send("WATCHDOG=1");
    }

    /**
     * The watchdog interval systemd expects pings within ({@code $WATCHDOG_USEC}), or {@code null}
     * when there is no watchdog for this process.
     */
    public static Duration watchdogInterval() {
        String usec = System.getenv("WATCHDOG_USEC");
        String pid = System.getenv("WATCHDOG_PID");
        if (usec == null || (pid != null && !pid.equals(Long.toString(ProcessHandle.current().pid())))) {
            return null;
        }
        try {
            return Duration.ofNanos(Long.parseLong(usec) * 1000);
        } catch (NumberFormatException e) {
            return null;
        }
    }

    /** Sends one notification datagram; a no-op when not run by systemd. */
    public void send(String message) throws IOException {
        if (!enabled()) {
            return;
        }
        byte[] path = socketPath.getBytes(StandardCharsets.UTF_8);
        boolean abstractName = path[0] == '@';
        if (path.length >= SUN_PATH) {
            throw new IOException("NOTIFY_SOCKET path is too long (" + path.length + " bytes): " + socketPath);
        }
        try (Arena arena = Arena.ofConfined()) {
            Native n = Native.get();
            MemorySegment state = arena.allocate(n.stateLayout);
            int fd = (int) n.socket.invokeExact(state, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                throw new IOException("socket(AF_UNIX, SOCK_DGRAM) failed: errno " + n.errno(state));
            }
            try {
                MemorySegment addr = arena.allocate(2 + SUN_PATH);
                addr.set(ValueLayout.JAVA_SHORT_UNALIGNED, 0, (short) AF_UNIX);
                MemorySegment.copy(path, 0, addr, ValueLayout.JAVA_BYTE, 2, path.length);
                if (abstractName) {
                    addr.set(ValueLayout.JAVA_BYTE, 2, (byte) 0);
                }
                int addrLen = 2 + path.length + (abstractName ? 0 : 1);
                byte[] msg = message.getBytes(StandardCharsets.UTF_8);
                MemorySegment buf = arena.allocateFrom(ValueLayout.JAVA_BYTE, msg);
                long sent = (long) n.sendto.invokeExact(state, fd, buf, (long) msg.length, MSG_NOSIGNAL, addr, addrLen);
                if (sent != msg.length) {
                    throw new IOException("sendto(" + socketPath + ") failed: errno " + n.errno(state)
                            + " (is NOTIFY_SOCKET reachable, and NotifyAccess= set for this process?)");
                }
            } finally {
                int rc = (int) n.close.invokeExact(fd);
                if (rc != 0) {
                    throw new IOException("close of the notify socket failed: errno " + n.errno(state));
                }
            }
        } catch (IOException e) {
            throw e;
        } catch (Throwable t) {
            throw new IOException("cannot notify systemd through " + socketPath + ": " + t, t);
        }
    }

    /** libc handles, bound once. */
    private static final class Native {
        private static volatile Native instance;
        final MethodHandle socket;
        final MethodHandle sendto;
        final MethodHandle close;
        final MemoryLayout stateLayout;
        final VarHandle errnoHandle;

        @SuppressWarnings("restricted") // libc downcalls; the daemon runs with --enable-native-access
        private Native() {
            Linker linker = Linker.nativeLinker();
            SymbolLookup libc = linker.defaultLookup();
            Linker.Option errno = Linker.Option.captureCallState("errno");
            stateLayout = Linker.Option.captureStateLayout();
            errnoHandle = stateLayout.varHandle(MemoryLayout.PathElement.groupElement("errno"));
            socket = linker.downcallHandle(libc.find("socket").orElseThrow(),
                    FunctionDescriptor.of(JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT), errno);
            sendto = linker.downcallHandle(libc.find("sendto").orElseThrow(),
                    FunctionDescriptor.of(JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, ADDRESS, JAVA_INT), errno);
            close = linker.downcallHandle(libc.find("close").orElseThrow(), FunctionDescriptor.of(JAVA_INT, JAVA_INT));
        }

        static Native get() {
            Native n = instance;
            if (n == null) {
                synchronized (Native.class) {
                    n = instance;
                    if (n == null) {
                        n = new Native();
                        instance = n;
                    }
                }
            }
            return n;
        }

        int errno(MemorySegment state) {
            return (int) errnoHandle.get(state, 0L);
        }
    }
}
