package org.orbitrl.tools;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.MemoryCategory;

/** {@code orbit plan} end to end through {@link Orbit#execute}: JSON parsed back, exit codes, error messages. */
class PlanCommandTest {
    private static final String KIMI = Path.of(System.getProperty("orbit.models"), "kimi-k2.6").toString();

    /**
     * {@code --job}: a job file is planned as its runner plans it when it is to run (here the quickstart job on the CUDA
     * backend over two rollout GPUs and a training GPU, H200s where no GPU is visible): the same JSON as the runner's
     * request, each role's budget; neither or both of --model and --job, and a malformed job file, are refused naming
     * what is wrong.
     */
    @Test
    void aJobFileIsPlannedAsItsRunnerPlansIt(@org.junit.jupiter.api.io.TempDir Path dir) throws Exception {
        Path repo = Path.of(System.getProperty("orbit.repo", ".."));
        String yaml = java.nio.file.Files.readString(repo.resolve("conf/jobs.d/quickstart.yaml"))
                .replace("path: ../../models/quickstart", "path: " + repo.resolve("models/quickstart").toAbsolutePath())
                + "placement: {backend: cuda, devices: 3, rollout_devices: 2}\n";
        Path job = dir.resolve("split.yaml");
        java.nio.file.Files.writeString(job, yaml);
        CommandRun r = CommandRun.orbit("plan", "--job", job.toString(), "--json");
        assertEquals(0, r.code(), r.err());
        var spec = org.orbitrl.scheduler.job.JobFiles.read(job);
        var plan = org.orbitrl.memory.plan.MemoryPlanner.plan(org.orbitrl.scheduler.loop.JobPlanning.request(spec));
        assertEquals(org.orbitrl.memory.plan.PlanJson.text(plan, org.orbitrl.memory.plan.FitAdvisor.suggest(plan)),
                r.out().strip(), "the runner's plan");
        JsonNode j = new ObjectMapper().readTree(r.out());
        assertTrue(j.get("layout").asText().contains("2 rollout : 1 train"), j.get("layout").asText());
        CommandRun table = CommandRun.orbit("plan", "--job", job.toString());
        assertTrue(table.out().contains("rollout") && table.out().contains("train"), "each role's column:\n" + table.out());

        CommandRun neither = CommandRun.orbit("plan");
        assertEquals(1, neither.code());
        assertTrue(neither.err().contains("--model") && neither.err().contains("--job"), neither.err());
        CommandRun both = CommandRun.orbit("plan", "--job", job.toString(), "--model", KIMI);
        assertEquals(1, both.code());
        assertTrue(both.err().contains("one of the two"), both.err());
        Path bad = dir.resolve("bad.yaml");
        java.nio.file.Files.writeString(bad, yaml.replace("prompts_per_step: 8", "prompts_per_step: -8"));
        CommandRun malformed = CommandRun.orbit("plan", "--job", bad.toString());
        assertEquals(1, malformed.code());
        assertTrue(malformed.err().contains("bad.yaml") && malformed.err().contains("prompts_per_step"), malformed.err());
    }

    /**
     * {@code --job} with a placement its runner refuses (a tensor split) is refused with the runner's message naming
     * the placement (exit 1, no plan printed), not planned with another layout; a job split by experts is planned with
     * its split, every GPU rolling out every sequence, and its notes say so without pointing at {@code --job}.
     */
    @Test
    void aJobFileWhosePlacementItsRunnerRefusesIsRefused(@org.junit.jupiter.api.io.TempDir Path dir) throws Exception {
        Path repo = Path.of(System.getProperty("orbit.repo", ".."));
        String yaml = java.nio.file.Files.readString(repo.resolve("conf/jobs.d/quickstart.yaml"))
                .replace("path: ../../models/quickstart", "path: " + repo.resolve("models/quickstart").toAbsolutePath());
        Path tp = dir.resolve("tp.yaml");
        java.nio.file.Files.writeString(tp, yaml + "placement: {backend: cuda, devices: 2, tensor_parallel: 2}\n");
        CommandRun r = CommandRun.orbit("plan", "--job", tp.toString());
        assertEquals(1, r.code(), r.out() + r.err());
        assertEquals("", r.out(), "no plan printed");
        assertTrue(r.err().contains("placement {devices: 2, rollout_devices: 0, expert_parallel: 1, tensor_parallel: 2}")
                && r.err().contains("the RL runner runs a job on one device"), r.err());

        Path ep = dir.resolve("ep.yaml");
        java.nio.file.Files.writeString(ep, yaml + "placement: {backend: cuda, devices: 2, expert_parallel: 2}\n");
        CommandRun e = CommandRun.orbit("plan", "--job", ep.toString(), "--json");
        assertEquals(0, e.code(), e.err());
        JsonNode j = new ObjectMapper().readTree(e.out());
        assertEquals("colocated, EP 2, TP 1", j.get("layout").asText());
        String notes = j.get("notes").toString();
        assertTrue(notes.contains("Every GPU rolls out every sequence") && !notes.contains("--job"), notes);
    }

    @Test
    void jsonOfAJobThatFits() throws Exception {
        // one expert per chunk and 24 prompts: each of Kimi's MoE layers keeps its own chunk buffer
        CommandRun r = CommandRun.orbit("plan", "--model", KIMI, "--node", "8xB200", "--base", "int4", "--adapter", "lora:32", "--chunk", "1",
                "--prompts", "24", "--json");
        assertEquals(0, r.code(), r.err());
        assertEquals(1, r.out().strip().lines().count(), "one JSON object on one line");
        JsonNode j = new ObjectMapper().readTree(r.out());
        assertEquals(1_026_408_209_408L, j.get("total_params").asLong());
        assertEquals(1_026_408_209_408L - 1_014_686_023_680L / 384 * 376, j.get("active_params").asLong());
        assertTrue(j.get("fits").asBoolean());
        assertEquals(183_359L << 20, j.get("gpu_capacity_bytes").asLong());
        JsonNode per = j.get("per_gpu_bytes");
        long sum = 0;
        for (MemoryCategory c : new MemoryCategory[] {MemoryCategory.BASE_WEIGHTS, MemoryCategory.KV_CACHE,
                MemoryCategory.ACTIVATIONS, MemoryCategory.OPTIMIZER_STATE, MemoryCategory.RUNTIME_RESERVE}) {
            assertTrue(per.get(c.name()).asLong() > 0, c + " is planned");
        }
        for (var it = per.properties().iterator(); it.hasNext(); ) {
            sum += it.next().getValue().asLong();
        }
        assertEquals(j.get("per_gpu_total_bytes").asLong(), sum, "categories add up to the total");
        assertTrue(sum <= j.get("gpu_capacity_bytes").asLong());
        assertEquals(0, j.get("suggestions").size());
    }

    /**
     * {@code --exact} plans the CUDA backend's exact mode: no dequantization chunk, and the activations changed by its
     * kernels' scratch alone (the planner's own figure for the same request), the other categories as without it.
     */
    @Test
    void exactModeIsPlannedWithItsKernelScratch() throws Exception {
        String[] args = {"plan", "--model", KIMI, "--node", "8xB200", "--base", "int4", "--adapter", "lora:32", "--chunk", "1",
                "--prompts", "24", "--json"};
        CommandRun d = CommandRun.orbit(args);
        String[] exactArgs = java.util.Arrays.copyOf(args, args.length + 1);
        exactArgs[args.length] = "--exact";
        CommandRun e = CommandRun.orbit(exactArgs);
        assertEquals(0, d.code(), d.err());
        assertEquals(0, e.code(), e.err());
        JsonNode dp = new ObjectMapper().readTree(d.out()).get("per_gpu_bytes");
        JsonNode ep = new ObjectMapper().readTree(e.out()).get("per_gpu_bytes");
        assertTrue(dp.get("DEQUANT_BUFFERS").asLong() > 0, "the default kernels' chunk buffer: " + dp);
        assertEquals(0, ep.path("DEQUANT_BUFFERS").asLong(), "exact mode reads the experts as stored: " + ep);
        assertEquals(dp.get("BASE_WEIGHTS").asLong(), ep.get("BASE_WEIGHTS").asLong());
        assertEquals(dp.get("KV_CACHE").asLong(), ep.get("KV_CACHE").asLong());
        assertTrue(ep.get("ACTIVATIONS").asLong() != dp.get("ACTIVATIONS").asLong(), "exact mode's own kernel scratch");
    }

    @Test
    void jobThatDoesNotFitExitsWithThreeAndSaysWhere() throws Exception {
        CommandRun r = CommandRun.orbit("plan", "--model", KIMI, "--node", "8xB200", "--base", "bf16", "--json");
        assertEquals(PlanCommand.DOES_NOT_FIT, r.code(), r.err());
        JsonNode j = new ObjectMapper().readTree(r.out());
        assertFalse(j.get("fits").asBoolean());
        assertEquals("BASE_WEIGHTS", j.get("overflow").asText());
        assertTrue(j.get("suggestions").size() > 0);
        CommandRun t = CommandRun.orbit("plan", "--model", KIMI, "--base", "bf16");
        assertEquals(PlanCommand.DOES_NOT_FIT, t.code());
        assertTrue(t.out().startsWith("job refused before loading"), t.out());
        assertTrue(t.out().contains("What would make it fit"), t.out());
    }

    @Test
    void tableOfAJobThatFits() {
        CommandRun r = CommandRun.orbit("plan", "--model", KIMI, "--node", "8xB200", "--base", "int4", "--adapter", "lora:32", "--chunk", "1",
                "--prompts", "24");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("base weights") && r.out().contains("KV cache") && r.out().contains("Fits."), r.out());
        assertTrue(r.out().contains("authors: 1T"), r.out());
    }

    @Test
    void badInputIsAClearError() {
        CommandRun node = CommandRun.orbit("plan", "--model", KIMI, "--node", "8xA100");
        assertEquals(1, node.code());
        assertTrue(node.err().contains("orbit plan: unknown node '8xA100'"), node.err());
        CommandRun ep = CommandRun.orbit("plan", "--model", KIMI, "--ep", "5");
        assertEquals(1, ep.code());
        assertTrue(ep.err().contains("384 experts") && ep.err().contains("5 expert-parallel"), ep.err());
        CommandRun neg = CommandRun.orbit("plan", "--model", KIMI, "--prompts", "-3");
        assertEquals(1, neg.code());
        assertTrue(neg.err().contains("prompts must be a positive number, got -3"), neg.err());
        CommandRun nan = CommandRun.orbit("plan", "--model", KIMI, "--micro-batch", "two");
        assertEquals(2, nan.code(), "picocli's usage error");
        assertTrue(nan.err().contains("'two' is not an int"), nan.err());
        CommandRun missing = CommandRun.orbit("plan", "--model", "/nonexistent/model");
        assertEquals(1, missing.code());
        assertTrue(missing.err().contains("/nonexistent/model"), missing.err());
        CommandRun split = CommandRun.orbit("plan", "--model", KIMI, "--split", "4-4");
        assertEquals(1, split.code());
        assertTrue(split.err().contains("ROLLOUT:TRAIN"), split.err());
        CommandRun job = CommandRun.orbit("plan", "--job", "/nonexistent/x.yaml");
        assertEquals(1, job.code());
        assertTrue(job.err().contains("/nonexistent/x.yaml"), job.err());
    }
}
