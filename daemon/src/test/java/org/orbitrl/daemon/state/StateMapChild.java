package org.orbitrl.daemon.state;

import java.io.File;
import java.nio.file.Path;
import net.openhft.chronicle.map.ChronicleMap;
import org.orbitrl.daemon.testing.ChildDaemon;

/**
 * A process that uses the state map as a daemon does and then stops in a chosen place, to be
 * killed there (SIGKILL) by a test: {@code hold-lock DIR} opens the map, takes the write lock of
 * a job's segment and waits; {@code recover DIR} opens the map through Chronicle Map's recovery
 * and waits inside it at the first repair it reports. Each prints a line once it is in place.
 */
public final class StateMapChild {
    /** Printed when the process is where it was asked to stop. */
    public static final String IN_PLACE = "in place: ";

    private StateMapChild() {
    }

    public static void main(String[] args) throws Exception {
        File file = Path.of(args[1]).resolve(StateStore.FILE).toFile();
        switch (args[0]) {
            case "hold-lock" -> {
                ChronicleMap<CharSequence, byte[]> map = StateStore.builder(64).createPersistedTo(file);
                map.queryContext("job-1").writeLock().lock();
                System.out.println(IN_PLACE + "holding the write lock of job-1's segment");
                Thread.sleep(Long.MAX_VALUE);
            }
            case "recover" -> StateStore.builder(64).recoverPersistedTo(file, true, corruption -> {
                System.out.println(IN_PLACE + "recovering: " + corruption.message());
                try {
                    Thread.sleep(Long.MAX_VALUE);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            });
            default -> throw new IllegalArgumentException("mode hold-lock or recover, got " + args[0]);
        }
    }

    /** The command line that runs this class with the test JVM's java, flags and class path. */
    public static java.util.List<String> command(String mode, Path dir) {
        java.util.List<String> cmd = new java.util.ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.addAll(ChildDaemon.orbitJvmFlags());
        cmd.add("-Xmx128m");
        cmd.add("-XX:TieredStopAtLevel=1");
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(StateMapChild.class.getName());
        cmd.add(mode);
        cmd.add(dir.toString());
        return cmd;
    }
}
