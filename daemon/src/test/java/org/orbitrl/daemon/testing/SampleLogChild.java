package org.orbitrl.daemon.testing;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import net.openhft.chronicle.queue.ExcerptAppender;
import net.openhft.chronicle.queue.impl.single.SingleChronicleQueue;
import net.openhft.chronicle.queue.impl.single.SingleChronicleQueueBuilder;
import net.openhft.chronicle.queue.rollcycles.LargeRollCycles;
import net.openhft.chronicle.wire.DocumentContext;
import org.orbitrl.scheduler.log.AdapterVersionEvent;
import org.orbitrl.scheduler.log.SampleLog;
import org.orbitrl.scheduler.log.SampleLogWriter;

/**
 * A process that appends to a job's sample log as a daemon does and stops halfway through an
 * entry, to be killed there (SIGKILL) by a test: {@code write-partial DIR N} appends adapter
 * versions 1..N whole, then opens one more entry on the queue (taking its write lock), writes
 * part of it and waits. Prints {@link #IN_PLACE} once it is there.
 */
public final class SampleLogChild {
    /** Printed when the entry is half written. */
    public static final String IN_PLACE = "in place: ";

    private SampleLogChild() {
    }

    /** The adapter-version event number {@code v}, as the child writes it. */
    public static AdapterVersionEvent event(long v) {
        return AdapterVersionEvent.of(v, v, "sha256:" + Long.toHexString(v * 0x9e3779b97f4a7c15L), "adapter-" + v,
                8 * v, 1_000_000L * v);
    }

    public static void main(String[] args) throws Exception {
        if (!"write-partial".equals(args[0])) {
            throw new IllegalArgumentException("mode write-partial, got " + args[0]);
        }
        Path dir = Path.of(args[1]);
        int n = Integer.parseInt(args[2]);
        SampleLog log = SampleLog.open(dir);
        SampleLogWriter writer = log.writer();
        for (int v = 1; v <= n; v++) {
            writer.append(event(v));
        }
        // The same folder through the queue's own API, to leave an entry open.
        SingleChronicleQueue queue = SingleChronicleQueueBuilder.binary(dir.toFile())
                .rollCycle(LargeRollCycles.HUGE_DAILY).build();
        ExcerptAppender appender = queue.createAppender();
        DocumentContext dc = appender.writingDocument();
        dc.wire().bytes().write(new byte[64]);
        System.out.println(IN_PLACE + "entry " + (n + 1) + " half written, write lock held");
        Thread.sleep(Long.MAX_VALUE);
    }

    /** The command line that runs this class with the test JVM's java, flags and class path. */
    public static List<String> command(Path dir, int entries) {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        cmd.addAll(ChildDaemon.orbitJvmFlags());
        cmd.add("-Xmx128m");
        cmd.add("-XX:TieredStopAtLevel=1");
        cmd.add("-cp");
        cmd.add(System.getProperty("java.class.path"));
        cmd.add(SampleLogChild.class.getName());
        cmd.add("write-partial");
        cmd.add(dir.toString());
        cmd.add(Integer.toString(entries));
        return cmd;
    }
}
