package org.orbitrl.tools;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.model.checkpoint.Checkpoint;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Path;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The command line against the transformers/peft fixtures: {@code orbit score} reproduces the
 * reference logits (1e-4 absolute) and the LoRA token log-probs; {@code orbit generate --greedy}
 * prints the reference greedy continuation as its last line; bad input fails with exit code 1
 * and a message naming the problem.
 */
class ScoreAndGenerateCommandTest {
    static final Path HF = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf");

    @Test
    void scoreMatchesTheReferenceLogitsAndLoraLogprobs(@TempDir Path tmp) {
        for (String arch : new String[]{"qwen3", "qwen3_moe"}) {
            Path dir = HF.resolve(arch);
            Path out = tmp.resolve(arch + ".safetensors");
            assertEquals(0, Orbit.execute("score", "--model", dir.toString(), "--tokens",
                    dir.resolve("reference.safetensors").toString(), "--out", out.toString()));
            try (Checkpoint got = Checkpoint.open(out); Checkpoint ref = Checkpoint.open(dir.resolve("reference.safetensors"))) {
                assertClose(arch + " logits", ref.tensor("logits").toFloatArray(), got.tensor("logits").toFloatArray(), 1e-4f);
                assertEquals(Arrays.toString(new long[]{2, 23}), Arrays.toString(got.tensor("token_logprobs").shape()));
            }
            Path outLora = tmp.resolve(arch + "-lora.safetensors");
            assertEquals(0, Orbit.execute("score", "--model", dir.toString(), "--tokens",
                    dir.resolve("reference.safetensors").toString(), "--out", outLora.toString(),
                    "--adapter", dir.resolve("adapter").toString()));
            try (Checkpoint got = Checkpoint.open(outLora); Checkpoint ref = Checkpoint.open(dir.resolve("reference_lora.safetensors"))) {
                assertClose(arch + " lora token_logprobs", ref.tensor("token_logprobs").toFloatArray(),
                        got.tensor("token_logprobs").toFloatArray(), 1e-4f);
            }
        }
    }

    @Test
    void generatePrintsTheGreedyContinuation() {
        for (String arch : new String[]{"qwen3", "qwen3_moe"}) {
            Path dir = HF.resolve(arch);
            long[] prompt;
            long[] seq;
            try (Checkpoint ref = Checkpoint.open(dir.resolve("reference.safetensors"))) {
                prompt = ref.tensor("greedy.prompt").toLongArray();
                seq = ref.tensor("greedy.sequence").toLongArray();
            }
            String ids = String.join(",", Arrays.stream(prompt).mapToObj(String::valueOf).toList());
            String printed = capture(() -> assertEquals(0, Orbit.execute("generate", "--model", dir.toString(),
                    "--prompt-ids", ids, "--max-new-tokens", String.valueOf(seq.length - prompt.length), "--greedy")));
            String[] lines = printed.strip().split("\n");
            String expected = String.join(" ", Arrays.stream(seq, prompt.length, seq.length).mapToObj(String::valueOf).toList());
            assertEquals(expected, lines[lines.length - 1], arch + " greedy continuation");
        }
    }

    @Test
    void badInputFailsWithAClearMessage(@TempDir Path tmp) {
        Path dir = HF.resolve("qwen3");
        String err = captureErr(() -> assertEquals(1, Orbit.execute("generate", "--model", dir.toString(),
                "--prompt-ids", "1,99999", "--max-new-tokens", "2")));
        assertTrue(err.contains("99999") && err.contains("vocabulary"), err);
        err = captureErr(() -> assertEquals(1, Orbit.execute("score", "--model", tmp.toString(), "--tokens",
                dir.resolve("reference.safetensors").toString(), "--out", tmp.resolve("x").toString())));
        assertTrue(err.contains("config.json"), err);
        err = captureErr(() -> assertEquals(1, Orbit.execute("score", "--model", dir.toString(), "--tokens",
                dir.resolve("reference.safetensors").toString(), "--out", tmp.resolve("x").toString(), "--base-format", "int3")));
        assertTrue(err.contains("int3") && err.contains("int4"), err);
    }

    @Test
    void sequencesPastTheModelsPositionsAreRefusedBeforeAnyWorkNamingTheFlagsAndTheConfig(@TempDir Path tmp) throws Exception {
        Path dir = HF.resolve("qwen3");   // max_position_embeddings 256
        String config = dir.resolve("config.json").toString();
        String prompt = "1,2,3,4,5,6,7,8,9,10";
        String err = captureErr(() -> assertEquals(1, Orbit.execute("generate", "--model", dir.toString(),
                "--prompt-ids", prompt, "--max-new-tokens", "248", "--greedy")));
        assertEquals("orbit generate: --prompt-ids (10 ids) and --max-new-tokens 248 need 257 positions; " + config
                + " allows max_position_embeddings 256 (at most 247 new tokens after this prompt)", err.strip());
        // the bound it names is the model's own: 247 new tokens run (the last one is never fed back)
        String printed = capture(() -> assertEquals(0, Orbit.execute("generate", "--model", dir.toString(),
                "--prompt-ids", prompt, "--max-new-tokens", "247", "--greedy")));
        String[] lines = printed.strip().split("\n");
        assertEquals(247, lines[lines.length - 1].split(" ").length, "new tokens printed");
        int[] ids = new int[257];
        for (int i = 0; i < ids.length; i++) {
            ids[i] = 1 + i % 50;
        }
        Path tokens = tmp.resolve("long.safetensors");
        new org.orbitrl.model.checkpoint.SafetensorsWriter().add("input_ids", org.orbitrl.kernels.Tensor.ofInts(ids, 1, 257))
                .write(tokens);
        err = captureErr(() -> assertEquals(1, Orbit.execute("score", "--model", dir.toString(), "--tokens", tokens.toString(),
                "--out", tmp.resolve("out.safetensors").toString())));
        assertEquals("orbit score: " + tokens + ": input_ids [1, 257] has 257 positions a row; " + config
                + " allows max_position_embeddings 256", err.strip());
    }

    static void assertClose(String what, float[] ref, float[] got, float atol) {
        assertEquals(ref.length, got.length, what);
        for (int i = 0; i < ref.length; i++) {
            if (!(Math.abs(ref[i] - got[i]) <= atol)) {
                throw new AssertionError(what + "[" + i + "]: ref " + ref[i] + " got " + got[i] + " (atol " + atol + ")");
            }
        }
    }

    static String capture(Runnable r) {
        PrintStream old = System.out;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setOut(new PrintStream(buf, true));
        try {
            r.run();
        } finally {
            System.setOut(old);
        }
        return buf.toString();
    }

    static String captureErr(Runnable r) {
        PrintStream old = System.err;
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        System.setErr(new PrintStream(buf, true));
        try {
            r.run();
        } finally {
            System.setErr(old);
        }
        return buf.toString();
    }
}
