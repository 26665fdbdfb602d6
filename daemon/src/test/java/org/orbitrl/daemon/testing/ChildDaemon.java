package org.orbitrl.daemon.testing;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * The daemon in its own JVM, started like production ({@code org.orbitrl.daemon.Main --config FILE})
 * with the java, class path and Orbit JVM flags of the test JVM. Output goes to a log file per
 * start. Used to kill it for real (SIGKILL) and to stop it with SIGTERM.
 */
public final class ChildDaemon implements AutoCloseable {
    private final Process process;
    private final Path log;
    private final long startedNanos = System.nanoTime();

    private ChildDaemon(Process process, Path log) {
        this.process = process;
        this.log = log;
    }

    /** The Orbit flags of this JVM (the parent pom's orbit.jvm.flags, from JVM.md) without heap and test properties. */
    public static List<String> orbitJvmFlags() {
        List<String> out = new ArrayList<>();
        for (String a : ManagementFactory.getRuntimeMXBean().getInputArguments()) {
            if (a.startsWith("--add-opens") || a.startsWith("--add-exports") || a.startsWith("--add-modules")
                    || a.startsWith("--enable-native-access") || a.startsWith("--sun-misc-unsafe-memory-access")
                    || a.startsWith("-Dchronicle.")) {
                out.add(a);
            }
        }
        return out;
    }

    /**
     * Starts a daemon.
     *
     * @param extraJvm further JVM options (system properties for the ledger runner, CDS)
     */
    public static ChildDaemon start(Path config, Path log, List<String> extraJvm) throws IOException {
        return start(config, log, extraJvm, List.of());
    }

    /**
     * Starts a daemon under a wrapper command (for example {@code unshare} with mounts) that ends by
     * executing the java command line appended to it.
     */
    public static ChildDaemon start(Path config, Path log, List<String> extraJvm, List<String> wrapper)
            throws IOException {
        List<String> cmd = new ArrayList<>(wrapper);
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.addAll(orbitJvmFlags());
        cmd.add("-Xmx256m");
        cmd.add("-XX:TieredStopAtLevel=1"); // a short-lived JVM: quick JIT, quick start
        cmd.addAll(extraJvm);
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add("org.orbitrl.daemon.Main");
        cmd.add("--config");
        cmd.add(config.toString());
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(log.toFile()).start();
        return new ChildDaemon(p, log);
    }

    public long pid() {
        return process.pid();
    }

    public Path log() {
        return log;
    }

    public boolean alive() {
        return process.isAlive();
    }

    /** The log so far. */
    public String output() throws IOException {
        return Files.exists(log) ? Files.readString(log, StandardCharsets.UTF_8) : "";
    }

    /** Waits until the log contains {@code text}; false if the process died or the time ran out. */
    public boolean awaitLog(String text, Duration timeout) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (System.nanoTime() < deadline) {
            if (output().contains(text)) {
                return true;
            }
            if (!process.isAlive()) {
                return output().contains(text);
            }
            Thread.sleep(25);
        }
        return false;
    }

    /** SIGKILL, and wait for the process to be gone. */
    public void kill9() throws InterruptedException {
        process.destroyForcibly(); // SIGKILL on Linux
        process.waitFor();
    }

    /** SIGTERM; returns the exit code, or -1 if it did not exit in time (then it is killed). */
    public int terminate(Duration timeout) throws InterruptedException {
        process.destroy(); // SIGTERM on Linux
        if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
            kill9();
            return -1;
        }
        return process.exitValue();
    }

    /**
     * The daemon's threads with their stacks ({@code jcmd PID Thread.print} of this JVM's JDK), to
     * say where it is stuck; a line saying why not when they cannot be taken.
     */
    public String threadDump() {
        if (!process.isAlive()) {
            return "(no thread dump: the daemon has exited with " + process.exitValue() + ")";
        }
        Path jcmd = Path.of(System.getProperty("java.home"), "bin", "jcmd");
        try {
            Process p = new ProcessBuilder(jcmd.toString(), Long.toString(process.pid()), "Thread.print")
                    .redirectErrorStream(true).start();
            CompletableFuture<byte[]> out = CompletableFuture.supplyAsync(() -> {
                try {
                    return p.getInputStream().readAllBytes();
                } catch (IOException e) {
                    return ("(reading jcmd's output: " + e + ")").getBytes(StandardCharsets.UTF_8);
                }
            });
            if (!p.waitFor(30, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                return "(no thread dump: " + jcmd + " did not answer within 30 s)";
            }
            return new String(out.get(5, TimeUnit.SECONDS), StandardCharsets.UTF_8);
        } catch (IOException | ExecutionException | TimeoutException e) {
            return "(no thread dump: " + e + ")";
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return "(no thread dump: interrupted)";
        }
    }

    /**
     * What a test says when the daemon did not reach a point in time: the log so far and, while
     * the process lives, its thread dump.
     */
    public String diagnosis(String what) throws IOException {
        return what + " (pid " + process.pid() + ", " + ageMillis() + " ms after start); log:\n" + output()
                + "\nthreads of the daemon:\n" + threadDump();
    }

    /** Milliseconds since start. */
    public long ageMillis() {
        return (System.nanoTime() - startedNanos) / 1_000_000;
    }

    @Override
    public void close() {
        if (process.isAlive()) {
            process.destroyForcibly();
            try {
                process.waitFor();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
