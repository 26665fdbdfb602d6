package org.orbitrl.daemon.systemd;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The sd_notify datagram, received by a peer we did not write: a Python {@code AF_UNIX}
 * {@code SOCK_DGRAM} socket, as systemd's is. Skipped where python3 is missing.
 */
class SdNotifyTest {
    @TempDir
    Path tmp;

    static String receive(String address, IOExceptionRunnable send) throws Exception {
        String py = "import socket,sys\n"
                + "a=sys.argv[1]\n"
                + "s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                + "s.bind('\\0'+a[1:] if a.startswith('@') else a)\n"
                + "s.settimeout(20)\n"
                + "print('bound', flush=True)\n"
                + "print(s.recv(4096).decode().replace('\\n','|'), flush=True)\n";
        Process p;
        try {
            p = new ProcessBuilder("python3", "-c", py, address).redirectErrorStream(true).start();
        } catch (IOException e) {
            Assumptions.abort("skipped: python3 is not installed");
            throw e;
        }
        try (BufferedReader in = new BufferedReader(new InputStreamReader(p.getInputStream()))) {
            assertEquals("bound", in.readLine());
            send.run();
            String got = in.readLine();
            assertTrue(p.waitFor(20, TimeUnit.SECONDS));
            return got;
        } finally {
            p.destroy();
        }
    }

    interface IOExceptionRunnable {
        void run() throws IOException;
    }

    @Test
    void readinessReachesAFileSystemSocket() throws Exception {
        String path = tmp.resolve("notify.sock").toString();
        String got = receive(path, () -> SdNotify.to(path).ready("serving /etc/orbit/jobs.d: 1 running"));
        assertEquals("READY=1|STATUS=serving /etc/orbit/jobs.d: 1 running|MAINPID=" + ProcessHandle.current().pid(), got);
    }

    @Test
    void stoppingReachesAnAbstractSocket() throws Exception {
        String name = "@orbit-test-" + ProcessHandle.current().pid() + "-" + System.nanoTime();
        String got = receive(name, () -> SdNotify.to(name).stopping(java.time.Duration.ofSeconds(70)));
        assertEquals("STOPPING=1|EXTEND_TIMEOUT_USEC=70000000", got);
    }

    @Test
    void noSocketIsANoOpAndAMissingPeerIsAnError() throws Exception {
        assertFalse(SdNotify.to(null).enabled());
        SdNotify.to(null).ready("ignored");
        IOException e = assertThrows(IOException.class, () -> SdNotify.to(tmp.resolve("nobody").toString()).watchdog());
        assertTrue(e.getMessage().startsWith("sendto(" + tmp.resolve("nobody") + ") failed: errno 2"), e.getMessage());
    }
}
