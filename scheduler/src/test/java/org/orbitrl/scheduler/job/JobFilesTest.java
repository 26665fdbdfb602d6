package org.orbitrl.scheduler.job;

import static org.junit.jupiter.api.Assertions.assertAll;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.scheduler.job.yaml.ConfigException;
import org.orbitrl.scheduler.job.yaml.ConfigProblem;

class JobFilesTest {
    static final Path BASE = Path.of("/srv/jobs");
    static final Path EXAMPLE = Path.of("").toAbsolutePath().getParent().resolve("conf/jobs.d/example.yaml");

    static JobSpec parse(String yaml) throws ConfigException {
        return JobFiles.parse("job.yaml", yaml.getBytes(StandardCharsets.UTF_8), "job", BASE);
    }

    static List<ConfigProblem> problems(String yaml) {
        ConfigException e = assertThrows(ConfigException.class, () -> parse(yaml));
        return e.problems();
    }

    static List<String> messages(String yaml) {
        ConfigException e = assertThrows(ConfigException.class, () -> parse(yaml));
        return e.problems().stream().map(ConfigProblem::toString).toList();
    }

    @Test
    void exampleFileHoldsTheDefaults() throws Exception {
        JobSpec example = JobFiles.parse("example.yaml", Files.readAllBytes(EXAMPLE), "job", EXAMPLE.getParent());
        JobSpec minimal = JobFiles.parse("min.yaml", "model: {path: ../../models/quickstart}\n".getBytes(
                StandardCharsets.UTF_8), "job", EXAMPLE.getParent());
        assertEquals(minimal, example, "every value in conf/jobs.d/example.yaml must be the default");
        assertEquals(EXAMPLE.getParent().resolve("../../models/quickstart").normalize(), example.model().path());
    }

    @Test
    void exampleFileNamesEveryKeyWithAComment() throws Exception {
        List<String> lines = Files.readAllLines(EXAMPLE);
        // Keys set in the file, and keys shown commented out ("# key: default") for other kinds.
        Pattern keyLine = Pattern.compile("^(\\s*)(#\\s*)?([a-z_0-9]+):(.*)$");
        Set<String> found = new LinkedHashSet<>();
        List<String> stack = new ArrayList<>();
        List<String> uncommented = new ArrayList<>();
        for (int i = 0; i < lines.size(); i++) {
            Matcher m = keyLine.matcher(lines.get(i));
            if (!m.matches()) {
                continue;
            }
            boolean commentedOut = m.group(2) != null;
            int depth = commentedOut ? 1 : m.group(1).length() / 2;
            if (commentedOut && (m.group(1).length() != 0 || !lines.get(i).startsWith("  #"))) {
                depth = (lines.get(i).indexOf('#')) / 2;
            }
            if (commentedOut && m.group(4).isBlank()) {
                continue; // prose that happens to end with a colon
            }
            while (stack.size() > depth) {
                stack.removeLast();
            }
            String key = String.join(".", stack) + (stack.isEmpty() ? "" : ".") + m.group(3);
            boolean blockList = i + 1 < lines.size() && lines.get(i + 1).strip().startsWith("- ");
            if (m.group(4).isBlank() && !blockList) {
                stack.add(m.group(3)); // a section
            } else {
                found.add(key);
            }
            // Every key line is preceded by a comment line (possibly the previous key's shared comment).
            String prev = i > 0 ? lines.get(i - 1).strip() : "";
            boolean leaf = !m.group(4).isBlank() || blockList;
            if (leaf && !commentedOut && !prev.startsWith("#") && !keyLine.matcher(lines.get(i - 1)).matches()) {
                uncommented.add(key);
            }
        }
        JobSpec spec = JobFiles.parse("example.yaml", Files.readAllBytes(EXAMPLE), "job", EXAMPLE.getParent());
        Set<String> known = SpecTree.leaves(spec, true, "name").keySet();
        assertEquals(known, found, "keys of JobSpec vs keys written in conf/jobs.d/example.yaml");
        assertTrue(uncommented.isEmpty(), "keys without a comment above them: " + uncommented);
    }

    @Test
    void everyProblemOfAFileIsReportedAtOnceWithLineAndColumn() {
        String yaml = """
                model:
                  path: m
                  colour: red
                sampling:
                  temperture: 0.7
                  top_p: 1.5
                batch:
                  prompts_per_step: many
                checkpoint:
                  every: 30
                memory:
                  reserve: 512mib
                frobnicate: true
                """;
        List<ConfigProblem> p = problems(yaml);
        List<String> got = p.stream().map(ConfigProblem::toString).toList();
        String all = String.join("\n", got);
        assertEquals(7, p.size(), all);
        assertEquals("job.yaml:3:3: model.colour: unknown key", got.get(0).substring(0, got.get(0).indexOf(';')), all);
        assertTrue(got.get(1).startsWith("job.yaml:5:3: sampling.temperture: unknown key (did you mean 'temperature'?)"), all);
        assertTrue(got.get(2).startsWith("job.yaml:6:10: sampling.top_p: must be greater than 0 and at most 1, got 1.5"), all);
        assertTrue(got.get(3).startsWith("job.yaml:8:21: batch.prompts_per_step: expected an integer, got 'many'"), all);
        assertTrue(got.get(4).startsWith("job.yaml:10:10: checkpoint.every: duration '30' needs a unit"), all);
        assertTrue(got.get(5).startsWith("job.yaml:12:12: memory.reserve: unknown size unit 'mib'"), all);
        assertTrue(got.get(6).startsWith("job.yaml:13:1: frobnicate: unknown key"), all);
    }

    @Test
    void keysOfAnotherKindAreRefused() {
        List<ConfigProblem> p = problems("""
                model: {path: m}
                task:
                  kind: sort
                  digits: 4
                adapter:
                  type: oft
                  rank: 8
                """);
        String all = p.toString();
        assertEquals(2, p.size(), all);
        assertEquals("task.digits", p.get(0).key());
        assertEquals(4, p.get(0).line());
        assertTrue(p.get(0).message().contains("applies to task kind addition, not sort"), all);
        assertEquals("adapter.rank", p.get(1).key());
        assertTrue(p.get(1).message().contains("applies to type lora, not oft"), all);
    }

    @Test
    void aRefusedChoiceIsTheOneProblemNotTheKeysWrittenForIt() {
        List<ConfigProblem> p = problems("""
                model: {path: m}
                task:
                  kind: sorrt
                  list_length: 6
                adapter:
                  type: offt
                  oft_block_size: 16
                optimizer:
                  schedule: cosine
                  warmup_steps: 10
                """);
        String all = p.toString();
        assertEquals(List.of("task.kind", "adapter.type", "optimizer.schedule"), p.stream().map(ConfigProblem::key).toList(), all);
        assertTrue(p.get(0).message().startsWith("expected one of addition, sort, countdown, jsonl, got 'sorrt'"), all);
        assertEquals(3, p.get(0).line());
        // the same keys under a valid choice they do not belong to are still refused
        p = problems("""
                model: {path: m}
                task:
                  kind: addition
                  list_length: 6
                """);
        assertEquals(List.of("task.list_length"), p.stream().map(ConfigProblem::key).toList(), p.toString());
    }

    @Test
    void oftRefusesExpertTargetsItWouldNotTrain() throws Exception {
        List<ConfigProblem> p = problems("""
                model: {path: m}
                adapter:
                  type: oft
                  targets: [q_proj, v_proj]
                  expert_targets: [gate_proj, down_proj]
                """);
        assertEquals(1, p.size(), p.toString());
        assertEquals("adapter.expert_targets", p.getFirst().key());
        assertEquals(5, p.getFirst().line());
        assertTrue(p.getFirst().message().contains("applies to type lora, not oft"), p.toString());
        assertEquals(List.of("gate_proj", "down_proj"), parse("""
                model: {path: m}
                adapter:
                  type: lora
                  expert_targets: [gate_proj, down_proj]
                """).adapter().expertTargets());
        assertEquals(AdapterKind.OFT, parse("""
                model: {path: m}
                adapter:
                  type: oft
                  expert_targets: []
                """).adapter().type());
    }

    @Test
    void aPathThatCannotBeOneIsAProblemAtItsKey() {
        List<ConfigProblem> p = problems("""
                model: {path: "m\\0x"}
                task:
                  kind: jsonl
                  train_path: "t\\0.jsonl"
                """);
        assertEquals(List.of("model.path", "task.train_path"), p.stream().map(ConfigProblem::key).toList(), p.toString());
        assertTrue(p.get(0).message().contains("expected a path, got text that cannot be one (Nul character not allowed"),
                p.toString());
    }

    @Test
    void crossFieldRulesPointAtTheKey() throws Exception {
        List<ConfigProblem> p = problems("""
                model: {path: m}
                eval:
                  samples: 4
                  pass_at_k: [1, 8]
                """);
        assertEquals(1, p.size(), p.toString());
        assertEquals("eval.pass_at_k[1]", p.getFirst().key());
        assertTrue(p.getFirst().message().contains("k = 8 needs at least 8 samples"), p.toString());
        assertEquals(4, p.getFirst().line());
        // Rules across sections are checked once every section is valid, and point at the key.
        p = problems("""
                model: {path: m}
                batch:
                  samples_per_prompt: 1
                  micro_batch: 1
                """);
        assertEquals(1, p.size(), p.toString());
        assertEquals("batch.samples_per_prompt", p.getFirst().key());
        assertEquals(3, p.getFirst().line());
        assertEquals(23, p.getFirst().column());
        assertTrue(p.getFirst().message().startsWith("group-relative advantages (grpo) need at least 2 samples"),
                p.toString());
        // kept_layers is a count or auto
        p = problems("""
                model: {path: m}
                memory:
                  kept_layers: most
                """);
        assertEquals(1, p.size(), p.toString());
        assertEquals("memory.kept_layers", p.getFirst().key());
        assertTrue(p.getFirst().message().contains("expected a number of layers (0 or more) or auto, got 'most'"), p.toString());
        assertEquals(1, problems("model: {path: m}\nmemory: {kept_layers: -2}\n").size());
        assertEquals(MemorySpec.AUTO, parse("model: {path: m}\nmemory: {kept_layers: auto}\n").memory().keptLayerCount());
        assertEquals(12, parse("model: {path: m}\nmemory: {kept_layers: 12}\n").memory().keptLayerCount());
        // offload_inputs is a boolean, off by default
        assertFalse(parse("model: {path: m}\n").memory().offloadInputs());
        assertTrue(parse("model: {path: m}\nmemory: {offload_inputs: true}\n").memory().offloadInputs());
        p = problems("model: {path: m}\nmemory: {offload_inputs: sometimes}\n");
        assertEquals(1, p.size(), p.toString());
        assertEquals("memory.offload_inputs", p.getFirst().key());
    }

    @Test
    void aBadValueIsOneProblemNotAlsoTheRulesThatUseIt() {
        assertAll(
                () -> assertEquals(List.of("job.yaml:2:27: batch.prompts_per_step: must be between 1 and 65536, got -8"),
                        messages("model: {path: m}\nbatch: {prompts_per_step: -8}\n")),
                () -> assertEquals(List.of("job.yaml:2:17: eval.samples: must be between 1 and 4096, got 0"),
                        messages("model: {path: m}\neval: {samples: 0}\n")),
                () -> assertEquals(List.of("job.yaml:2:42: placement.expert_parallel: must be between 1 and 1024, got 0"),
                        messages("model: {path: m}\nplacement: {devices: 2, expert_parallel: 0}\n")));
    }

    @Test
    void aBadJobNameIsTheFileNamesProblemReportedOnce(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("bad name!.yaml");
        Files.writeString(file, "model: {path: m}\nsteps: 0\n");
        ConfigException e = assertThrows(ConfigException.class, () -> JobFiles.read(file));
        assertEquals(List.of(file + ": the file name gives the job name 'bad name!': use 1 to 64 letters, digits, '.',"
                        + " '_' or '-', starting with a letter or digit",
                file + ":2:8: steps: must be between 1 and 1000000000, got 0"),
                e.problems().stream().map(ConfigProblem::toString).toList());
    }

    @Test
    void malformedDocumentsAreProblemsNotCrashes() {
        assertTrue(problems("").getFirst().message().startsWith("empty job file"));
        assertTrue(problems("# only a comment\n").getFirst().message().startsWith("empty job file"));
        assertTrue(problems("model: {path: m}\nsteps: 1\nsteps: 2\n").getFirst().message()
                .startsWith("duplicate key (first written at line 2)"));
        assertTrue(problems("model: {path: m}\n---\nsteps: 2\n").getFirst().message().startsWith("more than one YAML"));
        assertTrue(problems("- a\n- b\n").getFirst().message().startsWith("expected a map of settings"));
        assertTrue(problems("model: {path: m\n").getFirst().message().startsWith("not valid YAML"));
        assertTrue(problems("model:\n  path: m\nsteps:\n").getFirst().message().startsWith("has no value"),
                problems("model:\n  path: m\nsteps:\n").toString());
        assertTrue(problems("model: {path: m}\nsteps: 99999999999999999999999\n").getFirst().message()
                .contains("between"));
        assertTrue(problems("model: {path: m}\nseed: .inf\n").getFirst().message().startsWith("expected an integer"));
        assertTrue(problems("model: {path: m}\ntis_cap: .nan\n").getFirst().message().startsWith("expected a number"));
        assertTrue(problems("model: {path: m}\nasync: {enabled: yes}\n").getFirst().message()
                .startsWith("expected true or false"));
        byte[] junk = {'m', ':', ' ', (byte) 0xff, (byte) 0xfe, 0, 1};
        ConfigException e = assertThrows(ConfigException.class, () -> JobFiles.parse("j", junk, "j", BASE));
        assertTrue(e.problems().getFirst().message().startsWith("not UTF-8 text"), e.getMessage());
        String deep = "{a: ".repeat(40) + "1" + "}".repeat(40) + "\n";
        assertTrue(problems(deep).getFirst().message().contains("deep"), problems(deep).toString());
        String big = "model: {path: m}\n# " + "x".repeat(2 << 20) + "\n";
        assertTrue(problems(big).getFirst().message().contains("more than the limit"));
    }

    @Test
    void theKvCacheIsF32UnlessAskedForBf16() throws Exception {
        assertEquals(org.orbitrl.kernels.DType.F32, parse("model: {path: m}\n").sampling().kvCache().dtype());
        JobSpec bf16 = parse("model: {path: m}\nsampling: {kv_cache: bf16}\n");
        assertEquals(SamplingSpec.KvCache.BF16, bf16.sampling().kvCache());
        assertEquals(org.orbitrl.kernels.DType.BF16, bf16.sampling().kvCache().dtype());
        assertEquals(bf16, JobFiles.parse("canonical", JobFiles.toYaml(bf16).getBytes(StandardCharsets.UTF_8), "job", BASE),
                "kv_cache survives the canonical form");
        List<ConfigProblem> p = problems("model: {path: m}\nsampling: {kv_cache: fp8}\n");
        assertEquals(1, p.size(), p.toString());
        assertEquals("sampling.kv_cache", p.get(0).key());
        assertTrue(p.get(0).message().contains("f32") && p.get(0).message().contains("bf16") && p.get(0).message().contains("fp8"),
                p.get(0).message());
    }

    @Test
    void canonicalYamlReadsBackEqual() throws Exception {
        JobSpec spec = parse("""
                model: {path: /models/kimi, base_format: int4}
                adapter: {rank: 64, alpha: 128, expert_targets: [gate_proj, up_proj, down_proj]}
                algorithm: {name: gspo}
                optimizer: {lr: 3e-6, schedule: warmup_cosine, warmup_steps: 20}
                checkpoint: {every: 90m}
                memory: {reserve: 1536MiB, kept_layers: auto}
                task: {kind: jsonl, train_path: data/gsm8k.jsonl, answer_format: gsm8k}
                placement: {backend: cuda, devices: 8, rollout_devices: 2, expert_parallel: 6}
                async: {enabled: true, staleness_bound: 2}
                """);
        assertEquals(3e-4, spec.algorithm().clipLow(), 0.0, "gspo's own default clip");
        assertEquals(Path.of("/srv/jobs/data/gsm8k.jsonl"), spec.task().trainPath());
        String yaml = JobFiles.toYaml(spec);
        JobSpec back = JobFiles.parse("canonical", yaml.getBytes(StandardCharsets.UTF_8), "job", Path.of("/elsewhere"));
        assertEquals(spec, back, yaml);
    }

    @Test
    void diffSeparatesTunableFromFixedFields() throws Exception {
        JobSpec a = parse("model: {path: m}\n");
        JobSpec b = parse("model: {path: m}\nsampling: {temperature: 0.7}\nadapter: {rank: 32}\neval: {interval: 5}\n");
        List<JobSpecDiff.Change> changes = JobSpecDiff.between(a, b);
        assertEquals(List.of(new JobSpecDiff.Change("adapter.rank", "16", "32", false),
                new JobSpecDiff.Change("sampling.temperature", "1.0", "0.7", true),
                new JobSpecDiff.Change("eval.interval", "10", "5", true)), changes);
        assertEquals(List.of(changes.getFirst()), JobSpecDiff.fixed(changes));
        JobSpec tuned = a.with(b.tunables());
        assertEquals(List.of("sampling.temperature", "eval.interval"),
                JobSpecDiff.between(a, tuned).stream().map(JobSpecDiff.Change::key).toList());
    }

    @Test
    void tunableKeysParseAndValidate() throws Exception {
        JobSpec a = parse("model: {path: m}\n");
        assertEquals(2e-5, TunableKey.parse("lr").apply(a, "2e-5").optimizer().lr(), 0.0);
        assertEquals(0.5, TunableKey.parse("sampling.temperature").apply(a, "0.5").sampling().temperature(), 0.0);
        assertEquals(4, TunableKey.parse("staleness-bound").apply(a, "4").async().stalenessBound());
        assertEquals(0, TunableKey.parse("eval_interval").apply(a, "0").eval().interval());
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
                () -> TunableKey.TEMPERATURE.apply(a, "11"));
        assertEquals("sampling.temperature: must be between 0 and 10, got 11", bad.getMessage());
        bad = assertThrows(IllegalArgumentException.class, () -> TunableKey.LEARNING_RATE.apply(a, "fast"));
        assertEquals("optimizer.lr: expected a number, got 'fast'", bad.getMessage());
        bad = assertThrows(IllegalArgumentException.class, () -> TunableKey.parse("adapter.rank"));
        assertTrue(bad.getMessage().contains("not a live-tunable key"), bad.getMessage());
    }

    @Test
    void warmupCosineScheduleMatchesItsClosedForm() throws Exception {
        OptimizerSpec o = parse("model: {path: m}\noptimizer: {lr: 1e-4, schedule: warmup_cosine, warmup_steps: 10,"
                + " min_lr_ratio: 0.1}\nsteps: 110\n").optimizer();
        double tol = 1e-18;
        assertEquals(1e-5, o.lrAt(0, 110), tol);
        assertEquals(1e-4, o.lrAt(9, 110), tol);
        assertEquals(1e-4, o.lrAt(10, 110), tol);
        // halfway through the decay: cos(pi/2) = 0 -> lr * (0.1 + 0.9 * 0.5)
        assertEquals(1e-4 * 0.55, o.lrAt(60, 110), 1e-15);
        assertEquals(1e-5, o.lrAt(110, 110), 1e-15);
    }
}
