package org.orbitrl.daemon.jobs;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.daemon.testing.DaemonHarness;
import org.orbitrl.daemon.testing.LedgerRunner;

/**
 * A job whose model cannot be read fails as soon as its file is accepted, with the file at fault and what was
 * expected, even while another job holds every device; a job that can run waits, and says what for.
 */
class JobAcceptanceTest {
    private static final Path REPO = Path.of(System.getProperty("orbit.repo", "../"));
    private static final Path QUICKSTART = REPO.resolve("models/quickstart").toAbsolutePath();

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

    @Test
    void aJobWhoseModelCannotBeReadFailsAtOnceWhileAnotherHoldsTheDevice() throws Exception {
        Path corrupt = modelWith("corrupt", "model.safetensors", safetensors("{\"w\": {\"dtype\": \"F32\", \"shape\": [1]"));
        Path badConfig = modelWith("llama", "config.json", "{\"model_type\": \"llama\"}".getBytes(StandardCharsets.UTF_8));
        Path noShard = modelWith("sharded", "model.safetensors.index.json",
                "{\"weight_map\": {\"w\": \"model-00001-of-00002.safetensors\"}}".getBytes(StandardCharsets.UTF_8));
        Files.delete(noShard.resolve("model.safetensors"));
        LedgerRunner.stepDelayMillis = 50;
        h = new DaemonHarness(tmp, "").start(true);
        h.writeJob("busy", DaemonHarness.ledgerJob(100_000, ""));
        h.awaitState("busy", JobState.RUNNING);

        h.writeJob("nomodel", rlJob(tmp.resolve("no/such/model")));
        h.writeJob("corrupt", rlJob(corrupt));
        h.writeJob("badconfig", rlJob(badConfig));
        h.writeJob("noshard", rlJob(noShard));
        h.writeJob("good", rlJob(QUICKSTART));
        for (String name : List.of("nomodel", "corrupt", "badconfig", "noshard")) {
            // the state is set before the listeners hear of it: wait for the transition's event too
            h.await(name + " to fail", Duration.ofSeconds(10),
                    () -> h.daemon.jobs().job(name).map(j -> j.state() == JobState.FAILED).orElse(false)
                            && h.events.contains(name + ":QUEUED->FAILED"));
            assertEquals(List.of(name + ":QUEUED->FAILED"),
                    h.events.stream().filter(e -> e.startsWith(name + ":") && e.contains("->")).toList());
        }
        assertEquals(JobState.RUNNING, h.job("busy").state(), "the device was held all along");

        assertEquals("job nomodel: model.path: " + tmp.resolve("no/such/model") + ": no such folder; expected the folder"
                + " of a Hugging Face checkpoint (config.json and model.safetensors, or its shards listed in"
                + " model.safetensors.index.json)", h.job("nomodel").reason());
        String reason = h.job("corrupt").reason();
        assertTrue(reason.startsWith("job corrupt: model.path: " + corrupt.resolve("model.safetensors")
                + ": header is not valid JSON"), reason);
        reason = h.job("badconfig").reason();
        assertTrue(reason.startsWith("job badconfig: model.path: " + badConfig.resolve("config.json")
                + ": key 'model_type': unsupported model_type 'llama'; Orbit supports"), reason);
        assertEquals("job noshard: model.path: " + noShard.resolve("model.safetensors.index.json") + ": tensor 'w': names"
                + " shard 'model-00001-of-00002.safetensors', which is not a file in " + noShard, h.job("noshard").reason());

        h.await("the readable job to wait", Duration.ofSeconds(10),   // accepted once its model has been read
                () -> h.daemon.jobs().job("good").map(j -> j.reason().startsWith("waiting")).orElse(false));
        assertEquals(JobState.QUEUED, h.job("good").state());
        assertEquals("waiting for 1 free cpu device(s) (0 of 1 free)", h.job("good").reason());

        h.writeJob("good", rlJob(tmp.resolve("moved")));
        h.awaitState("good", JobState.FAILED);
        assertTrue(h.job("good").reason().startsWith("job good: model.path: " + tmp.resolve("moved") + ": no such folder"),
                h.job("good").reason());
        assertEquals(List.of("good:QUEUED->QUEUED", "good:QUEUED->FAILED"),
                h.events.stream().filter(e -> e.startsWith("good:") && e.contains("->")).toList(), "it never started");

        Files.createDirectories(tmp.resolve("no/such"));
        Files.createSymbolicLink(tmp.resolve("no/such/model"), QUICKSTART);
        h.daemon.jobs().resume("nomodel");
        assertEquals(JobState.QUEUED, h.job("nomodel").state(), "its model is there now");
        assertEquals("waiting for 1 free cpu device(s) (0 of 1 free)", h.job("nomodel").reason());
        assertEquals(JobState.RUNNING, h.job("busy").state());
    }

    @Test
    void everyQueuedJobSaysWhatItWaitsFor() throws Exception {
        LedgerRunner.stepDelayMillis = 50;
        h = new DaemonHarness(tmp, "").start();
        h.writeJob("busy", DaemonHarness.ledgerJob(100_000, ""));
        h.awaitState("busy", JobState.RUNNING);
        h.writeJob("first", DaemonHarness.ledgerJob(3, ""));
        h.await("first to wait", Duration.ofSeconds(10), () -> h.daemon.jobs().job("first")
                .map(j -> !j.reason().isEmpty()).orElse(false));
        h.writeJob("second", DaemonHarness.ledgerJob(3, ""));
        h.await("second to be read", Duration.ofSeconds(10), () -> h.daemon.jobs().job("second").isPresent());
        Thread.sleep(300); // the watcher's debounce, and more
        assertEquals(JobState.QUEUED, h.job("first").state());
        assertEquals(JobState.QUEUED, h.job("second").state());
        assertEquals("waiting for 1 free cpu device(s) (0 of 1 free)", h.job("first").reason());
        assertEquals("waiting for 1 free cpu device(s), queued behind job first", h.job("second").reason());
        h.daemon.jobs().stop("busy");
        h.awaitState("first", JobState.COMPLETED);
        h.awaitState("second", JobState.COMPLETED);
    }

    /** An RL job file on {@code model}. */
    private static String rlJob(Path model) {
        return "model: {path: " + model + "}\nsteps: 3\nbatch: {prompts_per_step: 2, samples_per_prompt: 2, micro_batch: 4}\n"
                + "task: {kind: sort, list_length: 3, max_value: 9}\n";
    }

    /** A copy of the quickstart model's files in a folder of its own, with {@code file} replaced by {@code bytes}. */
    private Path modelWith(String name, String file, byte[] bytes) throws Exception {
        Path dir = tmp.resolve("models").resolve(name);
        Files.createDirectories(dir);
        try (var files = Files.list(QUICKSTART)) {
            for (Path f : files.toList()) {
                Files.copy(f, dir.resolve(f.getFileName()));
            }
        }
        Files.write(dir.resolve(file), bytes);
        return dir;
    }

    /** A safetensors file whose header is {@code header} (length prefix, header, no data). */
    private static byte[] safetensors(String header) {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        return ByteBuffer.allocate(8 + h.length).order(ByteOrder.LITTLE_ENDIAN).putLong(h.length).put(h).array();
    }
}
