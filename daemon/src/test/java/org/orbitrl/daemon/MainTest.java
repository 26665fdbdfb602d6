package org.orbitrl.daemon;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The command line of orbitd, in-process: exit codes and messages, without System.exit. */
class MainTest {
    @TempDir
    Path tmp;

    int run(ByteArrayOutputStream out, ByteArrayOutputStream err, String... args) {
        return Main.run(args, new PrintStream(out, true), new PrintStream(err, true));
    }

    @Test
    void exitCodesSayWhatWentWrong() throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        Path good = tmp.resolve("orbit.yaml");
        Files.writeString(good, "data_dir: data\n");
        assertEquals(0, run(out, err, "--config", good.toString(), "--check"));
        assertTrue(out.toString().contains("is valid"), out.toString());
        Path bad = tmp.resolve("bad.yaml");
        Files.writeString(bad, "data_dir: data\nwatch: {debounce: soon}\nextra: 1\n");
        assertEquals(DaemonException.CONFIG, run(out, err, "--config", bad.toString(), "--check"));
        assertTrue(err.toString().contains("bad.yaml:2:19: watch.debounce: expected a duration"), err.toString());
        assertTrue(err.toString().contains("bad.yaml:3:1: extra: unknown key"), err.toString());
        assertEquals(DaemonException.CONFIG, run(out, err, "--config", tmp.resolve("missing.yaml").toString()));
        assertTrue(err.toString().contains("no configuration at " + tmp.resolve("missing.yaml")), err.toString());
        assertEquals(DaemonException.USAGE, run(out, err, "--frobnicate"));
        assertEquals(DaemonException.USAGE, run(out, err, "--config"));
    }
}
