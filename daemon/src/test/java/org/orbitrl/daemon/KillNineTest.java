package org.orbitrl.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.SplittableRandom;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.testing.ChildDaemon;
import org.orbitrl.daemon.testing.DaemonHarness;
import org.orbitrl.daemon.testing.LedgerRunner;
import org.orbitrl.daemon.testing.LedgerState;
import org.orbitrl.scheduler.job.checkpoint.CheckpointStore;
import org.orbitrl.scheduler.log.LogEntry;
import org.orbitrl.scheduler.log.SampleLog;
import org.orbitrl.scheduler.log.SampleLogReader;

/**
 * The daemon in a child JVM, stopped with SIGTERM (exit 0 after checkpointing) and killed with
 * SIGKILL at random points many times while a job runs; after each restart the job resumes from
 * its last checkpoint, and at the end every logged sample was trained exactly once. Some kills land
 * inside the state map's recovery, which leaves its header incomplete for the next start. A start
 * that does not reach the job in time fails with the daemon's log and thread dump. The kill points
 * come from a seed, {@code -Dorbit.test.kill9.seed=N} to try others.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class KillNineTest {
    private static final Pattern PROGRESS = Pattern.compile("job ledger step (\\d+)/");
    private static final Pattern RESUME = Pattern.compile("resuming from checkpoint step (\\d+)");

    /**
     * How long a (re)start may take to run the job: a few seconds normally; Chronicle Map alone
     * would wait a minute on a state map whose header a killed daemon left incomplete.
     */
    static final Duration START_BOUND = Duration.ofSeconds(30);

    /** The warning Chronicle Map logs as its recovery begins. */
    static final String CHRONICLE_RECOVERY_WARNING = "Do not use recovery as a standard way";

    @TempDir
    Path tmp;

    Path config(Path root, int steps) throws IOException {
        Path jobs = root.resolve("jobs.d");
        Files.createDirectories(jobs);
        Files.writeString(jobs.resolve("ledger.yaml"), DaemonHarness.ledgerJob(steps,
                "checkpoint: {interval: 5}\neval: {interval: 50, samples: 4, pass_at_k: [1, 4]}\n")
                .replace("eval: {interval: 10, samples: 4, pass_at_k: [1, 4]}\n", ""));
        Path config = root.resolve("orbit.yaml");
        Files.writeString(config, "data_dir: " + root.resolve("data") + "\njobs_dir: " + jobs + "\n"
                + "watch: {debounce: 100ms}\nshutdown_timeout: 20s\nlog: {level: info}\n");
        return config;
    }

    static List<String> jvm(long stepMillis) {
        return List.of("-Dorbit.test.ledger.stepMillis=" + stepMillis);
    }

    @Test
    @Order(1)
    void sigtermCheckpointsRunningJobsAndExitsZero() throws Exception {
        Path config = config(tmp, 100_000);
        try (ChildDaemon d = ChildDaemon.start(config, tmp.resolve("run.log"), jvm(20))) {
            await(d, "job ledger step 5/", Duration.ofSeconds(60), "SIGTERM test");
            long t0 = System.nanoTime();
            int exit = d.terminate(Duration.ofSeconds(30));
            long ms = (System.nanoTime() - t0) / 1_000_000;
            String out = d.output();
            assertEquals(0, exit, "exit code after SIGTERM; log:\n" + out);
            Matcher m = Pattern.compile("job ledger: checkpointed at step (\\d+) for shutdown").matcher(out);
            assertTrue(m.find(), out);
            long step = Long.parseLong(m.group(1));
            assertEquals(lastProgressStep(out), step, "the checkpoint holds the last step that ran");
            assertEquals(step, checkpoints(tmp).latest().checkpoint().step());
            assertTrue(out.contains("Orbit daemon stopped"), out);
            System.out.println("SIGTERM: exit 0 after " + ms + " ms, checkpointed at step " + step);
        }
    }

    /** Waits for {@code text} in the daemon's log; fails with the log and the daemon's threads. */
    static void await(ChildDaemon d, String text, Duration timeout, String context) throws Exception {
        if (!d.awaitLog(text, timeout)) {
            throw new AssertionError(d.diagnosis(context + ": no '" + text + "' in the log within " + timeout));
        }
    }

    @Test
    @Order(2)
    void killedAtRandomPointsTheJobResumesAndTrainsEverySampleExactlyOnce() throws Exception {
        int steps = 400;
        int groupsPerStep = 2;
        Path config = config(tmp, steps);
        Path stateMap = tmp.resolve("data/state/jobs.cm3"); // present once a daemon has created it
        long seed = Long.getLong("orbit.test.kill9.seed", 20_260_601L);
        SplittableRandom rnd = new SplittableRandom(seed);
        // a count, not a time budget: as many kills, of the same seeded kinds, on a slow machine as on a fast one
        int plannedKills = 10;
        int kills = 0;
        int killsDuringStartup = 0;
        int killsDuringRecovery = 0;
        int runs = 0;
        long replayed = 0;
        long lastStepSeen = 0;
        List<Long> resumedAt = new ArrayList<>();
        List<Long> startMillis = new ArrayList<>();
        StringBuilder logs = new StringBuilder();
        while (kills < plannedKills) {
            Path log = tmp.resolve("run-" + runs + ".log");
            try (ChildDaemon d = ChildDaemon.start(config, log, jvm(15))) {
                runs++;
                String context = "run " + runs + " (seed " + seed + ", after " + kills + " kills)";
                int mode = rnd.nextInt(5);
                if (mode == 0) {
                    Thread.sleep(rnd.nextInt(2500)); // somewhere in startup, recovery or loading
                    killsDuringStartup++;
                } else if (mode <= 2 && Files.exists(stateMap)) {
                    // Inside the state map's recovery, which a killed daemon's successor runs first:
                    // Chronicle Map's recovery starts with its warnings and marks the header incomplete
                    // until it is done.
                    await(d, "recovering it", START_BOUND, context);
                    d.awaitLog(CHRONICLE_RECOVERY_WARNING, Duration.ofSeconds(10));
                    Thread.sleep(30 + rnd.nextInt(100));
                    killsDuringRecovery++;
                } else {
                    await(d, "loading -> running", START_BOUND, context);
                    startMillis.add(d.ageMillis());
                    Thread.sleep(100 + rnd.nextInt(1200));
                }
                d.kill9();
                kills++;
                String out = d.output();
                logs.append(out);
                Matcher r = RESUME.matcher(out);
                if (r.find()) {
                    long from = Long.parseLong(r.group(1));
                    resumedAt.add(from);
                    replayed += Math.max(0, lastStepSeen - from);
                }
                lastStepSeen = Math.max(lastStepSeen, lastProgressStep(out));
                if (out.contains("ledger: running -> completed")) {
                    break;
                }
            }
        }
        // The last run goes to the end, then stops cleanly.
        try (ChildDaemon d = ChildDaemon.start(config, tmp.resolve("final.log"), jvm(0))) {
            runs++;
            if (!logs.toString().contains("ledger: running -> completed")) {
                await(d, "loading -> running", START_BOUND, "the last run (seed " + seed + ")");
                await(d, "ledger: running -> completed", Duration.ofSeconds(120), "the last run (seed " + seed + ")");
            }
            Matcher r = RESUME.matcher(d.output());
            if (r.find()) {
                resumedAt.add(Long.parseLong(r.group(1)));
                replayed += Math.max(0, lastStepSeen - Long.parseLong(r.group(1)));
            }
            assertEquals(0, d.terminate(Duration.ofSeconds(30)), d.output());
            logs.append(d.output());
        }
        // The trainer's final state: every group once, in order, and nothing else.
        LedgerState s = LedgerState.fromBytes(checkpoints(tmp).latest().checkpoint().bytes("ledger"));
        long groups = (long) steps * groupsPerStep;
        assertEquals(steps, s.step);
        assertEquals(groups, s.groupsTrained, "groups trained");
        assertEquals(0, s.duplicates, "groups trained twice");
        assertEquals(0, s.gaps, "groups skipped");
        assertEquals(groups, s.trained.cardinality());
        // The log holds each group exactly once, and the trainer's chain is that of the log's groups in order.
        BitSet logged = new BitSet();
        long duplicatesLogged = 0;
        long samplesLogged = 0;
        TreeMap<Long, Long> contentById = new TreeMap<>();
        try (SampleLog log = SampleLog.open(tmp.resolve("data/jobs/ledger/samples")); SampleLogReader reader = log.reader()) {
            for (LogEntry e = reader.next(); e != null; e = reader.next()) {
                if (e instanceof LogEntry.Group g) {
                    int id = (int) g.group().groupId();
                    duplicatesLogged += logged.get(id) ? 1 : 0;
                    logged.set(id);
                    samplesLogged += g.group().size();
                    contentById.put((long) id, LedgerRunner.contentHash(g.group()));
                }
            }
        }
        assertEquals(0, duplicatesLogged, "groups logged twice");
        assertEquals(groups, logged.cardinality());
        assertEquals(groups - 1, logged.length() - 1);
        long chain = 17;
        for (var e : contentById.entrySet()) {
            chain = LedgerState.mix(chain, e.getKey(), e.getValue());
        }
        assertEquals(chain, s.chain, "the trained sequence is the logged sequence");
        long fallbacks = Pattern.compile("is corrupt").matcher(logs).results().count();
        long incompleteMaps = Pattern.compile("was left marked incomplete").matcher(logs).results().count();
        System.out.printf("kill -9 (seed %d): %d kills (%d during startup or loading, %d inside the state map's"
                        + " recovery) over %d runs; %d restarts found the state map's header left incomplete;"
                        + " running %s ms after start; resumed from checkpoints at steps %s; %d steps replayed from"
                        + " the log after kills; %d checkpoints set aside as corrupt; %d groups (%d samples) logged,"
                        + " each once; %d samples trained exactly once: 0 lost, 0 twice%n",
                seed, kills, killsDuringStartup, killsDuringRecovery, runs, incompleteMaps, startMillis, resumedAt,
                replayed, fallbacks, groups, samplesLogged, s.samplesTrained);
        assertTrue(kills >= 5, "enough kills to mean something: " + kills);
    }

    static long lastProgressStep(String out) {
        Matcher m = PROGRESS.matcher(out);
        long last = 0;
        while (m.find()) {
            last = Math.max(last, Long.parseLong(m.group(1)));
        }
        return last;
    }

    CheckpointStore checkpoints(Path root) throws IOException {
        return new CheckpointStore(root.resolve("data/jobs/ledger/checkpoints"), 100);
    }
}
