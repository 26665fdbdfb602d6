package org.orbitrl.daemon.watch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import javax.management.openmbean.CompositeData;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.jmx.JmxAgent;
import org.orbitrl.daemon.jobs.Job;
import org.orbitrl.daemon.jobs.JobState;
import org.orbitrl.daemon.testing.DaemonHarness;
import org.orbitrl.daemon.testing.LedgerRunner;
import org.orbitrl.daemon.testing.LedgerState;

/**
 * Hundreds of malformed job files dropped into the jobs folder while a valid job runs: every one
 * fails alone with a reason naming its file, and the daemon keeps serving JMX and the valid job.
 */
class JobFileFuzzTest {
    @TempDir
    Path tmp;
    DaemonHarness h;

    @AfterEach
    void tearDown() {
        LedgerRunner.stepDelayMillis = 0;
        if (h != null) {
            h.close();
        }
    }

    /** Malformed files by kind; each is invalid by construction (never a valid job by accident). */
    static Map<String, byte[]> malformed(long seed, int perKind) {
        SplittableRandom rnd = new SplittableRandom(seed);
        String valid = DaemonHarness.ledgerJob(5, "");
        String[] lines = valid.split("\n");
        Map<String, byte[]> out = new LinkedHashMap<>();
        for (int i = 0; i < perKind; i++) {
            // Bad YAML: an unclosed flow map, a tab indent, a stray colon, a broken quote.
            String[] bad = {"model: {path: m\n", "model:\n\tpath: m\n", "model: path: m: x\n", "model: {path: \"m}\n",
                "- [\n", "model: {path: m}\n  steps: 3\n bad\n", "]]]\n", "model: {path: m}\nsteps: [1, 2\n"};
            out.put("yaml-" + i, (bad[i % bad.length] + "# " + rnd.nextInt() + "\n").getBytes(StandardCharsets.UTF_8));
            // Wrong types.
            String[][] types = {{"steps: 5", "steps: many"}, {"steps: 5", "steps: [5]"}, {"steps: 5", "steps: {n: 5}"},
                {"prompts_per_step: 2", "prompts_per_step: 2.5"}, {"steps: 5", "steps: 5\nseed: true"},
                {"steps: 5", "steps: 5\nasync: {enabled: maybe}"}, {"steps: 5", "steps: 5\nsampling: 0.7"},
                {"steps: 5", "steps: 5\ncheckpoint: {every: 30}"}};
            String[] t = types[i % types.length];
            out.put("type-" + i, (valid.replace(t[0], t[1]) + "# " + rnd.nextInt() + "\n").getBytes(StandardCharsets.UTF_8));
            // Unknown keys, anywhere.
            String key = "k" + Long.toHexString(rnd.nextLong());
            int at = 1 + rnd.nextInt(lines.length - 1);
            List<String> l = new ArrayList<>(List.of(lines));
            l.add(at, key + ": 1");
            out.put("unknown-" + i, (String.join("\n", l) + "\n").getBytes(StandardCharsets.UTF_8));
            // Huge values: out of range, overflowing, enormous text, deep nesting, a file over the size limit.
            String[] huge = {valid.replace("steps: 5", "steps: 99999999999999999999999999"),
                valid.replace("steps: 5", "steps: 5000000000"), valid + "seed: 1e999\n",
                valid.replace("/models/none", "x".repeat(70_000)), "model: " + "{a: ".repeat(200) + "1" + "}".repeat(200) + "\n",
                valid + "# " + "y".repeat(1_100_000) + "\n", valid.replace("prompts_per_step: 2", "prompts_per_step: 100000000"),
                valid + "tis_cap: -3\n"};
            out.put("huge-" + i, huge[i % huge.length].getBytes(StandardCharsets.UTF_8));
            // Binary junk, with NUL and invalid UTF-8 guaranteed.
            byte[] junk = new byte[1 + rnd.nextInt(4096)];
            rnd.nextBytes(junk);
            junk[0] = (byte) 0xff;
            out.put("junk-" + i, junk);
            // Empty and nearly empty.
            String[] empty = {"", "\n", "# nothing\n", "---\n", "~\n", "{}\n", "[]\n", "model:\n"};
            out.put("empty-" + i, empty[i % empty.length].getBytes(StandardCharsets.UTF_8));
            // YAML tricks: aliases, several documents, duplicate keys, tags.
            String[] tricks = {"a: &x [1]\nb: *x\nmodel: {path: m}\n", valid + "---\n" + valid, valid + "steps: 6\n",
                "model: !!binary aGVsbG8=\n", "model: {path: m}\n? [complex, key]\n: v\n", valid.replace("runner: ledger", "runner: Bad Name"),
                "\ufeffmodel: {path: m}\nsteps: -1\n", valid + "task: {kind: sort, digits: 4}\n"};
            out.put("trick-" + i, tricks[i % tricks.length].getBytes(StandardCharsets.UTF_8));
        }
        return out;
    }

    @Test
    void hundredsOfMalformedFilesFailAloneWhileTheDaemonKeepsServing() throws Exception {
        LedgerRunner.stepDelayMillis = 5;
        h = new DaemonHarness(tmp, "").start();
        h.writeJob("steady", DaemonHarness.ledgerJob(200, "checkpoint: {interval: 20}\n"));
        h.awaitState("steady", JobState.RUNNING);
        Map<String, byte[]> files = malformed(20_240_601L, Integer.getInteger("fuzz.perKind", 40));
        for (Map.Entry<String, byte[]> e : files.entrySet()) {
            Files.write(h.jobsDir.resolve(e.getKey() + ".yaml"), e.getValue());
        }
        h.await("every malformed file to be judged", Duration.ofSeconds(90), () -> files.keySet().stream()
                .allMatch(n -> h.daemon.jobs().job(n).map(j -> j.state() == JobState.FAILED).orElse(false)));
        List<String> wrong = new ArrayList<>();
        for (String name : files.keySet()) {
            Job j = h.job(name);
            String reason = j.reason();
            if (!reason.startsWith("invalid job file: ") || !reason.contains(name + ".yaml")) {
                wrong.add(name + ": " + reason.substring(0, Math.min(200, reason.length())));
            }
        }
        assertTrue(wrong.isEmpty(), wrong.size() + " files without a clear reason: " + wrong);
        // Serving: JMX answers and lists every job, and the valid job trains every sample once.
        CompositeData[] jobs = (CompositeData[]) h.mbeans.getAttribute(JmxAgent.daemonName(), "Jobs");
        assertEquals(files.size() + 1, jobs.length);
        h.awaitState("steady", JobState.COMPLETED);
        LedgerState s = h.lastCheckpoint("steady");
        assertEquals(400, s.groupsTrained);
        assertEquals(0, s.duplicates + s.gaps);
        // Fixing a file brings its job to life.
        h.writeJob("junk-0", DaemonHarness.ledgerJob(3, ""));
        h.awaitState("junk-0", JobState.COMPLETED);
        System.out.println("fuzz: " + files.size() + " malformed job files, all failed alone with a reason naming the file");
    }
}
