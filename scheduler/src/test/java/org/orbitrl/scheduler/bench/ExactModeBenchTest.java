package org.orbitrl.scheduler.bench;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.kernels.cpu.CpuBackend;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.loop.PolicyStepProbe;
import org.orbitrl.scheduler.rollout.Completion;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The exact-mode bench's measuring code ({@link ExactModeRun}) on a shrunk Qwen3-4B shape with
 * random weights, on the CPU backend, which is exact by construction (a token's decode logits
 * equal its training-prefill logits bit for bit): the gap it reports must be 0 with every token
 * exactly equal, and a log-prob perturbed by a known amount must come back as exactly that gap.
 */
class ExactModeBenchTest {
    private static final int PROMPTS = 2;
    private static final int SAMPLES = 2;
    private static final int PROMPT_TOKENS = 6;
    private static final int NEW_TOKENS = 6;
    private static final long HOUR = 3_600_000_000_000L;

    @TempDir
    static Path dir;
    private static CpuBackend backend;
    private static ExactModeRun run;   // shared: its learning rate is 0, so no test changes what another measures

    @BeforeAll
    static void load() throws Exception {
        Path config = Path.of(System.getProperty("orbit.models", "../../shared/models"), "qwen3-4b", "config.json");
        Path model = dir.resolve("model");
        RandomQwen3.read(config).small().write(model, 3);
        backend = new CpuBackend(2);
        run = new ExactModeRun("cpu", backend, ExactModeRun.Model.folder(model, BaseFormat.BF16), settings(BaseFormat.BF16), null);
    }

    @AfterAll
    static void close() {
        if (run != null) {
            run.close();
        }
        if (backend != null) {
            backend.close();
        }
    }

    private static ExactModeRun.Settings settings(BaseFormat base) {
        // temperature 0.8: the trainer must recompute at the sampling temperature, not at 1
        return new ExactModeRun.Settings(PROMPTS, SAMPLES, PROMPT_TOKENS, NEW_TOKENS, 2, 0.8f, SAMPLES, 1, 4, base, 5);
    }

    /**
     * The MoE form of the bench (a shrunk Qwen3-30B-A3B: INT4 group-32 experts generated as loaded, LoRA on q/k/v/o and
     * the fused experts, expert chunks of 8) through the same measuring code on the CPU backend: no gap either.
     */
    @Test
    void moeModelOnTheCpuReportsNoGap() throws Exception {
        ObjectNode cfg = (ObjectNode) Qwen3TrainBench.readJson(Path.of(System.getProperty("orbit.models", "../../shared/models"),
                "qwen3-30b-a3b", "config.json"));
        Qwen3TrainBench.shrink(cfg);
        cfg.put("num_hidden_layers", 2);
        Path file = dir.resolve("moe-config.json");
        Files.writeString(file, cfg.toPrettyString());
        DecoderConfig dc = DecoderConfig.from(ConfigLoader.load(file));
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        try (CpuBackend b = new CpuBackend(2);
             ExactModeRun moe = new ExactModeRun("cpu-moe", b, ExactModeBench.moeModel(dc, 3, 8), settings(BaseFormat.INT4), null)) {
            ExactModeRun.Figures f = moe.measure(System.nanoTime() + HOUR, new PrintStream(log, true, StandardCharsets.UTF_8));
            String printed = log.toString(StandardCharsets.UTF_8);
            long generated = (long) PROMPTS * SAMPLES * NEW_TOKENS;
            assertEquals(generated, f.decodeTokens(), printed);
            assertEquals(generated, f.gapTokens(), printed);
            assertEquals(0.0, f.gapMax(), "max |train - rollout| log-prob of the MoE model on the CPU backend\n" + printed);
            assertEquals(generated, f.gapExact(), printed);
        }
    }

    /** The MoE model's experts are generated as INT4: another base format is refused by name, before any work. */
    @Test
    void theMoeModelRefusesAnotherBase() {
        String config = Path.of(System.getProperty("orbit.models", "../../shared/models"), "qwen3-30b-a3b", "config.json").toString();
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> ExactModeBench.main(new String[]{"--config", config, "--base", "bf16", "--small"}));
        assertTrue(e.getMessage().contains("--base bf16") && e.getMessage().contains("expected int4"), e.getMessage());
    }

    @Test
    void cpuBackendReportsNoGap() {
        ByteArrayOutputStream log = new ByteArrayOutputStream();
        ExactModeRun.Figures f = run.measure(System.nanoTime() + HOUR, new PrintStream(log, true, StandardCharsets.UTF_8));
        String printed = log.toString(StandardCharsets.UTF_8);
        long generated = (long) PROMPTS * SAMPLES * NEW_TOKENS;
        assertEquals(generated, f.decodeTokens(), "generated tokens (no stop token: every sample runs to the limit)\n" + printed);
        assertEquals(generated, f.gapTokens(), "tokens the gap is over\n" + printed);
        assertEquals(0.0, f.gapMax(), "max |train - rollout| log-prob on the CPU backend\n" + printed);
        assertEquals(0.0, f.gapMean(), "mean |train - rollout| log-prob on the CPU backend\n" + printed);
        assertEquals(generated, f.gapExact(), "tokens recomputed exactly equal\n" + printed);
        assertEquals(1.0, f.exactFraction());
        assertEquals((long) PROMPTS * SAMPLES * (PROMPT_TOKENS + NEW_TOKENS), f.trainTokens(), "one timed step's tokens");
        assertTrue(f.decodeTokensPerSecond() > 0 && Double.isFinite(f.decodeTokensPerSecond()), "decode tokens/s " + f);
        assertTrue(f.trainTokensPerSecond() > 0 && Double.isFinite(f.trainTokensPerSecond()), "train tokens/s " + f);
        assertTrue(printed.contains("cpu: train/rollout log-prob gap over 24 tokens"), "the gap is printed as measured:\n" + printed);
    }

    @Test
    void perturbedRolloutLogprobShowsAsThatGap() {
        List<Completion> out = run.rollout(NEW_TOKENS, 9).completions();
        for (Completion c : out) {
            for (float lp : c.policyLogprobs()) {
                assertTrue(lp < 0 && Float.isFinite(lp), "a rollout log-prob of a 512-token vocabulary: " + lp);
            }
        }
        int which = 3;   // completion 3 (prompt 1, sample 1), token 4
        int token = 4;
        List<Completion> perturbed = new ArrayList<>(out);
        Completion c = out.get(which);
        float[] lp = c.policyLogprobs().clone();
        float original = lp[token];
        lp[token] = original + 0.0371f;
        double expected = Math.abs((double) lp[token] - original);
        perturbed.set(which, new Completion(c.requestId(), c.sample(), c.prompt(), c.tokens(), lp, c.sampledLogprobs(),
                c.versions(), c.reason(), c.stopString(), c.preemptions()));
        List<SampleRecord> samples = run.samples(perturbed);
        PolicyStepProbe.Step s = run.train(samples);
        long n = (long) PROMPTS * SAMPLES * NEW_TOKENS;
        assertEquals(n, s.tokens());
        assertEquals(expected, s.gapMax(), "max gap: exactly the perturbation of rollout log-prob [" + which + "]["
                + token + "] " + original + " -> " + lp[token]);
        assertEquals(n - 1, s.gapExact(), "every other token exactly equal");
        assertEquals(expected / n, s.gapMean(), 1e-15, "mean gap: the perturbation over " + n + " tokens");
        // the learning rate is 0: the adapter is unchanged, so the unperturbed samples still show no gap
        PolicyStepProbe.Step again = run.train(run.samples(out));
        assertEquals(0.0, again.gapMax(), "gap after a step at learning rate 0");
        assertEquals(n, again.gapExact());
    }

    @Test
    void budgetSpentBeforeRolloutStillReports() {
        ExactModeRun.Figures f = run.measure(System.nanoTime() - 1, new PrintStream(new ByteArrayOutputStream(), true,
                StandardCharsets.UTF_8));
        assertEquals(0, f.decodeTokens());
        assertTrue(Double.isNaN(f.decodeTokensPerSecond()) && Double.isNaN(f.gapMax()), "nothing measured: " + f);
        assertTrue(f.note().contains("budget"), f.note());
    }

    @Test
    void tableRatiosAreExactOverDefault() {
        var def = new ExactModeRun.Figures("default", 1000, 2.0, 3000, 1.5, 1e-3, 4e-2, 10, 1000, "");
        var exact = new ExactModeRun.Figures("exact", 1000, 5.0, 3000, 2.0, 0, 0, 1000, 1000, "");
        String t = ExactModeBench.table(List.of(def, exact));
        // default 500 and 2000 tokens/s, exact 200 and 1500: ratios 0.4 and 0.75
        assertTrue(t.contains("| default | 500.0 | 2000.0 | 1.000e-03 | 4.000e-02 | 0.0100 |"), t);
        assertTrue(t.contains("| exact | 200.0 | 1500.0 | 0.000e+00 | 0.000e+00 | 1.0000 |"), t);
        assertTrue(t.contains("| exact/default | 0.400 | 0.750 |"), t);
    }

    /** A base format other than bf16 would load this dense model as bf16 anyway: refused by name, before any work. */
    @Test
    void aQuantizedBaseIsRefusedForTheDenseModel() {
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> ExactModeBench.main(new String[]{"--base", "int4", "--small"}));
        assertTrue(e.getMessage().contains("--base int4") && e.getMessage().contains("dense"), e.getMessage());
    }
}
