package org.orbitrl.tools;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.io.UncheckedIOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Errors of orbit's commands name what was given: a file and what is wrong with it, a flag and its range. */
class CommandErrorsTest {
    private static final String NL = System.lineSeparator();

    @Test
    void aMissingJobFileOrAFolderIsNamedWithWhatIsWrong(@TempDir Path dir) {
        Path missing = dir.resolve("x/nonexist.yaml");
        assertEquals(new CommandRun(1, "", "orbit run: job file " + missing + ": no such file" + NL), CommandRun.orbit("run", missing.toString()));
        assertEquals(new CommandRun(1, "", "orbit plan: job file " + missing + ": no such file" + NL),
                CommandRun.orbit("plan", "--job", missing.toString()));
        assertEquals(new CommandRun(1, "", "orbit run: job file " + dir + ": is a directory, expected a job file (.yaml)" + NL),
                CommandRun.orbit("run", dir.toString()));
    }

    @Test
    void fileExceptionsReadAsThePathAndWhatIsWrongWithIt() {
        assertEquals("/srv/jobs/a.yaml: permission denied",
                CommandFiles.describe(new AccessDeniedException("/srv/jobs/a.yaml")));
        assertEquals("/m/t.safetensors: no such file",
                CommandFiles.describe(new UncheckedIOException(new NoSuchFileException("/m/t.safetensors"))));
        assertEquals("/srv/out: read-only file system",
                CommandFiles.describe(new FileSystemException("/srv/out", null, "Read-only file system")));
        assertNull(CommandFiles.describe(new IllegalStateException("not about a file")));
    }

    @Test
    void generateNamesTheFlagThatIsOutOfRange(@TempDir Path dir) {
        String model = dir.toString();
        assertEquals("orbit generate: --max-new-tokens must be at least 1, got 0" + NL,
                CommandRun.orbit("generate", "--model", model, "--prompt-ids", "1", "--max-new-tokens", "0").err());
        assertEquals("orbit generate: --top-p must be greater than 0 and at most 1, got 0.0" + NL,
                CommandRun.orbit("generate", "--model", model, "--prompt-ids", "1", "--max-new-tokens", "2", "--top-p", "0").err());
        assertEquals("orbit generate: --temperature must be 0 (greedy) or more, got -1.0" + NL,
                CommandRun.orbit("generate", "--model", model, "--prompt-ids", "1", "--max-new-tokens", "2", "--temperature", "-1").err());
        assertEquals("orbit generate: --base-format: base format 'int3' is not one of [bf16, int4, mxfp4, nvfp4]" + NL,
                CommandRun.orbit("generate", "--model", model, "--prompt-ids", "1", "--max-new-tokens", "2", "--base-format", "int3").err());
    }
}
