package org.orbitrl.daemon.testing;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.BooleanSupplier;
import javax.management.MBeanServer;
import javax.management.MBeanServerFactory;
import org.orbitrl.daemon.Daemon;
import org.orbitrl.daemon.DaemonException;
import org.orbitrl.daemon.config.OrbitConfig;
import org.orbitrl.daemon.jobs.Job;
import org.orbitrl.daemon.jobs.JobListener;
import org.orbitrl.daemon.jobs.JobState;
import org.orbitrl.scheduler.job.checkpoint.CheckpointStore;
import org.orbitrl.scheduler.job.yaml.ConfigException;

/**
 * An in-process daemon on temporary folders, with the ledger runner, a private MBean server and
 * a record of every event, plus helpers to write job files the way editors do and to wait.
 */
public final class DaemonHarness implements AutoCloseable {
    public final Path root;
    public final Path jobsDir;
    public final Path dataDir;
    public final MBeanServer mbeans = MBeanServerFactory.newMBeanServer();
    public final List<String> events = new CopyOnWriteArrayList<>();
    public Daemon daemon;
    private final String extraConfig;

    public DaemonHarness(Path root, String extraConfig) {
        this.root = root;
        this.jobsDir = root.resolve("jobs.d");
        this.dataDir = root.resolve("data");
        this.extraConfig = extraConfig;
    }

    public OrbitConfig config() throws ConfigException {
        String yaml = "data_dir: " + dataDir + "\njobs_dir: " + jobsDir + "\n"
                + "watch: {debounce: 150ms, rescan: 2s}\nshutdown_timeout: 20s\n" + extraConfig;
        return OrbitConfig.parse("test orbit.yaml", yaml.getBytes(StandardCharsets.UTF_8), root);
    }

    /** Starts (or restarts) the daemon. */
    public DaemonHarness start() throws DaemonException, ConfigException, IOException {
        return start(false);
    }

    /** Starts the daemon with the test ledger runner, and with Orbit's installed runners (rl) if asked. */
    public DaemonHarness start(boolean installedRunners) throws DaemonException, ConfigException, IOException {
        Files.createDirectories(jobsDir);
        Map<String, org.orbitrl.scheduler.job.JobRunnerProvider> runners = new java.util.HashMap<>();
        if (installedRunners) {
            for (var p : java.util.ServiceLoader.load(org.orbitrl.scheduler.job.JobRunnerProvider.class)) {
                runners.put(p.name(), p);                      // as Main finds them
            }
        }
        runners.put("ledger", new LedgerProvider());
        daemon = Daemon.start(config(), runners, mbeans, List.of(new JobListener() {
            @Override
            public void stateChanged(Job job, JobState from, JobState to, String reason) {
                events.add(job.name() + ":" + from + "->" + to);
            }

            @Override
            public void notice(String job, String kind, String message) {
                events.add(job + ":notice:" + kind + ":" + message);
            }
        })); // registered before restored jobs start, so no early transition or notice is missed
        return this;
    }

    /** A ledger job file's text. */
    public static String ledgerJob(long steps, String extra) {
        return "runner: ledger\nmodel: {path: /models/none}\nsteps: " + steps + "\n"
                + "batch: {prompts_per_step: 2, samples_per_prompt: 2, micro_batch: 2}\n"
                + "eval: {interval: 10, samples: 4, pass_at_k: [1, 4]}\n" + extra;
    }

    /** Writes a job file as careful editors do: a temporary file in the folder, then an atomic rename. */
    public Path writeJob(String name, String yaml) throws IOException {
        Path tmp = jobsDir.resolve("." + name + ".yaml.tmp");
        Files.writeString(tmp, yaml);
        Path target = jobsDir.resolve(name + ".yaml");
        Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        return target;
    }

    public Job job(String name) {
        return daemon.jobs().job(name).orElseThrow(() -> new AssertionError("no job " + name + "; events " + events));
    }

    /** Waits for a condition, failing with {@code what} and the event log after {@code timeout}. */
    public void await(String what, Duration timeout, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out after " + timeout + " waiting for " + what + "; events: " + events);
            }
            Thread.sleep(20);
        }
    }

    public void awaitState(String name, JobState state) throws InterruptedException {
        await("job " + name + " to be " + state, Duration.ofSeconds(30),
                () -> daemon.jobs().job(name).map(j -> j.state() == state).orElse(false));
    }

    /** The ledger state in a job's newest valid checkpoint. */
    public LedgerState lastCheckpoint(String name) throws Exception {
        CheckpointStore store = new CheckpointStore(dataDir.resolve("jobs").resolve(name).resolve("checkpoints"), 100);
        var found = store.latest();
        if (found.checkpoint() == null) {
            throw new AssertionError("job " + name + " has no checkpoint");
        }
        return LedgerState.fromBytes(found.checkpoint().bytes("ledger"));
    }

    public long checkpointStep(String name) throws Exception {
        CheckpointStore store = new CheckpointStore(dataDir.resolve("jobs").resolve(name).resolve("checkpoints"), 100);
        return store.latest().checkpoint().step();
    }

    @Override
    public void close() {
        if (daemon != null) {
            daemon.close();
            daemon = null;
        }
    }
}
