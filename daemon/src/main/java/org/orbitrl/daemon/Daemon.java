package org.orbitrl.daemon;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.ServiceLoader;
import javax.management.JMException;
import javax.management.MBeanServer;
import org.orbitrl.daemon.config.OrbitConfig;
import org.orbitrl.daemon.jmx.JmxAgent;
import org.orbitrl.daemon.jobs.JobFileEvents;
import org.orbitrl.daemon.jobs.JobManager;
import org.orbitrl.daemon.jobs.JobState;
import org.orbitrl.daemon.state.StateStore;
import org.orbitrl.daemon.watch.JobsWatcher;
import org.orbitrl.scheduler.job.JobRunnerProvider;
import org.orbitrl.scheduler.job.yaml.Units;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The daemon: state, jobs, the jobs-folder watcher and JMX, started in that order and closed in
 * the reverse. {@link #close()} checkpoints every running job (each resumes on the next start)
 * within the configured shutdown timeout. Throws {@link DaemonException} rather than exiting, so
 * tests run it in-process.
 *
 * <p>A data directory that cannot be written does not stop the daemon: it serves JMX with an
 * in-memory state map and fails every job with the reason.
 */
public final class Daemon implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(Daemon.class);

    private final OrbitConfig config;
    private final FileChannel lockChannel;
    private final FileLock lock;
    private final StateStore store;
    private final JobManager manager;
    private final JmxAgent jmx;
    private final JobsWatcher watcher;
    private final String dataDirProblem;
    private boolean closed;

    private Daemon(OrbitConfig config, FileChannel lockChannel, FileLock lock, StateStore store, JobManager manager,
                   JmxAgent jmx, JobsWatcher watcher, String dataDirProblem) {
        this.config = config;
        this.lockChannel = lockChannel;
        this.lock = lock;
        this.store = store;
        this.manager = manager;
        this.jmx = jmx;
        this.watcher = watcher;
        this.dataDirProblem = dataDirProblem;
    }

    /** The runner providers installed on the class path, by name. */
    public static Map<String, JobRunnerProvider> installedRunners() throws DaemonException {
        Map<String, JobRunnerProvider> out = new HashMap<>();
        for (JobRunnerProvider p : ServiceLoader.load(JobRunnerProvider.class)) {
            JobRunnerProvider previous = out.put(p.name(), p);
            if (previous != null) {
                throw new DaemonException(DaemonException.CONFIG, "two job runners are named '" + p.name() + "': "
                        + previous.getClass().getName() + " and " + p.getClass().getName());
            }
        }
        return out;
    }

    /** Starts a daemon. */
    public static Daemon start(OrbitConfig config, Map<String, JobRunnerProvider> runners, MBeanServer mbeans)
            throws DaemonException {
        return start(config, runners, mbeans, java.util.List.of());
    }

    /**
     * Starts a daemon with {@code listeners} registered before any remembered job is restored or
     * any job file read, so that they see every transition and notice from the first.
     */
    public static Daemon start(OrbitConfig config, Map<String, JobRunnerProvider> runners, MBeanServer mbeans,
                               java.util.List<org.orbitrl.daemon.jobs.JobListener> listeners) throws DaemonException {
        FileChannel lockChannel = null;
        FileLock lock = null;
        String problem = null;
        StateStore store;
        try {
            Files.createDirectories(config.dataDir());
            lockChannel = FileChannel.open(config.dataDir().resolve("daemon.lock"), StandardOpenOption.CREATE,
                    StandardOpenOption.WRITE);
            lock = lockChannel.tryLock();
            if (lock == null) {
                lockChannel.close();
                throw new DaemonException(DaemonException.IN_USE, "another Orbit daemon uses the data directory "
                        + config.dataDir() + " (it holds " + config.dataDir().resolve("daemon.lock") + ")");
            }
        } catch (OverlappingFileLockException e) {
            throw new DaemonException(DaemonException.IN_USE, "this process already runs a daemon on "
                    + config.dataDir(), e);
        } catch (IOException | RuntimeException e) {
            problem = "the data directory " + config.dataDir() + " cannot be written (" + describe(e) + ")";
            closeQuietly(lockChannel);
            lockChannel = null;
            lock = null;
        }
        if (problem == null) {
            Path stateDir = config.dataDir().resolve("state");
            try {
                store = StateStore.open(stateDir, config.maxJobs());
            } catch (IOException | RuntimeException e) {
                problem = "the state map in " + stateDir + " cannot be opened (" + describe(e)
                        + "); move it aside to start with no remembered jobs";
                store = null;
            }
        } else {
            store = null;
        }
        if (store == null) {
            LOG.error("{}; serving with state in memory only, and every job fails until it is fixed", problem);
            store = StateStore.inMemory(config.maxJobs());
        }
        JobManager manager = new JobManager(config, store, runners, problem);
        listeners.forEach(manager::addListener);
        manager.restore();
        JobFileEvents events = new JobFileEvents(manager);
        JmxAgent jmx = null;
        JobsWatcher watcher = null;
        try {
            jmx = new JmxAgent(mbeans, manager, () -> events.rescan(config.jobsDir()), problem, config.remoteJmx());
            if (!Files.isDirectory(config.jobsDir())) {
                LOG.warn("the jobs folder {} does not exist; create it to add jobs", config.jobsDir());
                Files.createDirectories(config.jobsDir());
            }
            events.rescan(config.jobsDir());
            manager.startScheduling();
            watcher = new JobsWatcher(config.jobsDir(), events, config.watch().debounce(), config.watch().rescan());
            watcher.start();
        } catch (IOException | JMException | RuntimeException e) {
            Daemon partial = new Daemon(config, lockChannel, lock, store, manager, jmx, watcher, problem);
            partial.close();
            throw new DaemonException(DaemonException.OS, "cannot start the daemon: " + describe(e), e);
        }
        Daemon d = new Daemon(config, lockChannel, lock, store, manager, jmx, watcher, problem);
        LOG.info("Orbit daemon {} serving {} (data {}, devices {}, {} jobs known){}", Version.VERSION, config.jobsDir(),
                config.dataDir(), config.devices(), manager.jobs().size(),
                jmx.remoteUrl() == null ? "" : ", remote JMX " + jmx.remoteUrl());
        return d;
    }

    public OrbitConfig config() {
        return config;
    }

    public JobManager jobs() {
        return manager;
    }

    /** Why the data directory cannot be written, or {@code null}. */
    public String dataDirProblem() {
        return dataDirProblem;
    }

    /** The remote JMX address, or {@code null} when remote JMX is off. */
    public String remoteJmxUrl() {
        return jmx == null ? null : jmx.remoteUrl();
    }

    /** A one-line status for systemd and logs. */
    public String status() {
        long running = manager.jobs().stream().filter(j -> j.state() == JobState.RUNNING).count();
        long queued = manager.jobs().stream().filter(j -> j.state() == JobState.QUEUED).count();
        return "serving " + config.jobsDir() + ": " + running + " running, " + queued + " queued, "
                + manager.jobs().size() + " known";
    }

    /** Whether the daemon's own threads are alive (for the systemd watchdog). */
    public boolean healthy(Duration maxSilence) {
        return watcher != null && watcher.healthy(maxSilence);
    }

    /**
     * Stops watching, checkpoints and ends every running job (they resume on the next start),
     * closes JMX and the state map. Waits up to the configured shutdown timeout for jobs.
     */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        if (watcher != null) {
            try {
                watcher.close();
            } catch (IOException e) {
                LOG.warn("closing the jobs watcher: {}", e.toString());
            }
        }
        try {
            List<String> late = manager.shutdown(config.shutdownTimeout());
            if (!late.isEmpty()) {
                LOG.error("jobs {} did not checkpoint within {}; they resume from their previous checkpoint", late,
                        Units.formatDuration(config.shutdownTimeout()));
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (jmx != null) {
            try {
                jmx.close();
            } catch (IOException e) {
                LOG.warn("closing JMX: {}", e.toString());
            }
        }
        try {
            store.close();
        } catch (IOException | RuntimeException e) {
            LOG.error("closing the state map: {}", e.toString());
        }
        if (lock != null) {
            try {
                lock.release();
            } catch (IOException e) {
                LOG.warn("releasing the data directory lock: {}", e.toString());
            }
        }
        closeQuietly(lockChannel);
        LOG.info("Orbit daemon stopped");
    }

    private static void closeQuietly(FileChannel ch) {
        if (ch != null) {
            try {
                ch.close();
            } catch (IOException e) {
                LOG.debug("closing {}: {}", ch, e.toString());
            }
        }
    }

    static String describe(Throwable e) {
        if (e instanceof AccessDeniedException) {
            return "permission denied: " + ((FileSystemException) e).getFile();
        }
        if (e instanceof FileSystemException fse && fse.getReason() != null) {
            return fse.getReason() + ": " + fse.getFile();
        }
        return e.getMessage() == null ? e.toString() : e.getMessage();
    }
}
