package org.orbitrl.daemon.watch;

import static java.nio.file.StandardWatchEventKinds.ENTRY_CREATE;
import static java.nio.file.StandardWatchEventKinds.ENTRY_DELETE;
import static java.nio.file.StandardWatchEventKinds.ENTRY_MODIFY;
import static java.nio.file.StandardWatchEventKinds.OVERFLOW;

import java.io.IOException;
import java.nio.file.ClosedWatchServiceException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.WatchEvent;
import java.nio.file.WatchKey;
import java.nio.file.WatchService;
import java.time.Duration;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.orbitrl.daemon.jobs.JobFileEvents;
import org.orbitrl.scheduler.job.JobFiles;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Watches the jobs folder with a {@link WatchService} and hands each job file to
 * {@link JobFileEvents} once it has been quiet for the debounce time: an editor that writes a
 * temporary file and renames it produces one event for the final name; a file still being
 * written keeps pushing its deadline back and is never read half-way. Hidden files, editor
 * backups and non-YAML files are ignored. The whole folder is also rescanned periodically and
 * after an event overflow. Owns one thread.
 */
public final class JobsWatcher implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(JobsWatcher.class);

    private final Path dir;
    private final JobFileEvents events;
    private final long debounceNanos;
    private final long rescanNanos;
    private final WatchService service;
    private final Thread thread;
    private final Map<Path, Long> pending = new HashMap<>(); // file -> deadline (nanoTime)
    private volatile boolean running = true;
    private volatile long lastLoopNanos = System.nanoTime();
    private WatchKey key;

    public JobsWatcher(Path dir, JobFileEvents events, Duration debounce, Duration rescan) throws IOException {
        this.dir = dir;
        this.events = events;
        this.debounceNanos = debounce.toNanos();
        this.rescanNanos = rescan.toNanos();
        this.service = dir.getFileSystem().newWatchService();
        register();
        this.thread = Thread.ofPlatform().name("jobs-watcher").daemon(true).unstarted(this::run);
    }

    /** Starts watching. */
    public void start() {
        thread.start();
    }

    /** Whether the watch thread is alive and has looped recently (for the systemd watchdog). */
    public boolean healthy(Duration maxSilence) {
        return thread.isAlive() && System.nanoTime() - lastLoopNanos < maxSilence.toNanos();
    }

    private void register() {
        try {
            key = dir.register(service, ENTRY_CREATE, ENTRY_MODIFY, ENTRY_DELETE);
        } catch (IOException e) {
            key = null;
            LOG.error("cannot watch the jobs folder {} ({}); checking it every rescan interval instead", dir, e.toString());
        }
    }

    private void run() {
        long nextRescan = System.nanoTime() + rescanNanos;
        while (running) {
            try {
                lastLoopNanos = System.nanoTime();
                long now = System.nanoTime();
                long wait = Math.min(nextRescan, nextDeadline(now + 1_000_000_000L)) - now;
                WatchKey k = service.poll(Math.max(1, wait), TimeUnit.NANOSECONDS);
                if (k != null) {
                    take(k);
                }
                now = System.nanoTime();
                dispatchDue(now);
                if (now >= nextRescan) {
                    if (key == null || !key.isValid()) {
                        register();
                    }
                    events.rescan(dir);
                    nextRescan = System.nanoTime() + rescanNanos;
                }
            } catch (ClosedWatchServiceException | InterruptedException e) {
                return;
            } catch (RuntimeException e) { // NOPMD: one bad file or event must not end the watch
                LOG.error("jobs folder watcher: {}", e.toString(), e);
            }
        }
    }

    private void take(WatchKey k) {
        boolean overflow = false;
        for (WatchEvent<?> e : k.pollEvents()) {
            if (e.kind() == OVERFLOW) {
                overflow = true;
                continue;
            }
            Path file = dir.resolve((Path) e.context());
            if (JobFiles.isJobFile(file)) {
                pending.put(file, System.nanoTime() + debounceNanos);
            }
        }
        if (!k.reset()) {
            LOG.error("the jobs folder {} can no longer be watched (deleted or unmounted?)", dir);
            key = null;
        }
        if (overflow) {
            LOG.warn("jobs folder events overflowed; rescanning {}", dir);
            events.rescan(dir);
        }
    }

    private void dispatchDue(long now) {
        for (Iterator<Map.Entry<Path, Long>> it = pending.entrySet().iterator(); it.hasNext(); ) {
            Map.Entry<Path, Long> e = it.next();
            if (e.getValue() - now > 0) {
                continue;
            }
            it.remove();
            Path file = e.getKey();
            if (Files.isRegularFile(file)) {
                events.changed(file);
            } else if (!Files.exists(file)) {
                events.removed(file);
            }
        }
    }

    private long nextDeadline(long fallback) {
        long next = fallback;
        for (long d : pending.values()) {
            next = Math.min(next, d);
        }
        return next;
    }

    @Override
    public void close() throws IOException {
        running = false;
        service.close();
        try {
            thread.join(5_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
