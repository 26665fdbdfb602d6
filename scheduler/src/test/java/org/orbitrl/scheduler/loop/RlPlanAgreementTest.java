package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.memory.plan.StorageFormat;
import org.orbitrl.memory.plan.WeightGroup;
import org.orbitrl.memory.plan.WeightInventory;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.scheduler.job.AdapterKind;
import org.orbitrl.scheduler.job.AdapterSpec;
import org.orbitrl.scheduler.job.BaseFormat;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.ModelSpec;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A job is planned with the base its runner loads and the adapter its runner attaches: for every
 * {@code model.base_format}, the planned base weight bytes equal what the loaded model holds
 * ({@code heldBaseBytes}; an NVFP4 matrix's 4-byte tensor scale, which the runtime keeps in a Java field, is the
 * planner's alone), on the bf16 checkpoints of all five architectures (the experts quantized on load; biases, gpt-oss's
 * sinks and DeepSeek V4's small tensors held in f32) and on the quickstart's INT4 one (its experts kept as stored); for the job's {@code adapter} section, the planned parameters and their element type equal
 * the adapter the runner builds on the loaded model; and a step of the job holds the adapter's planned bytes: the
 * trainer's parameters, gradients and optimizer state, and the rollout engine's two slots (without gradients).
 */
class RlPlanAgreementTest {
    private static final Path HF = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf");

    @Test
    void theBaseIsPlannedAsTheRunnerLoadsIt() throws Exception {
        JobSpec q = QuickstartJobTest.quickstart()   // an adapter every architecture has a target for
                .withAdapter(new AdapterSpec(AdapterKind.LORA, 2, 4, 0, List.of("lm_head"), List.of(), 32));
        List<Path> models = new java.util.ArrayList<>();
        for (String arch : List.of("qwen3", "qwen3_moe", "deepseek_v3", "deepseek_v4", "gpt_oss")) {
            models.add(HF.resolve(arch));
        }
        models.add(q.model().path());
        for (Path model : models) {
            for (BaseFormat f : List.of(BaseFormat.AUTO, BaseFormat.BF16, BaseFormat.INT4, BaseFormat.MXFP4, BaseFormat.NVFP4)) {
                JobSpec spec = q.withModel(new ModelSpec(model, f));
                PlanRequest req = RlPlan.request(spec);
                long planned = MemoryPlanner.plan(req).perGpuBytes().get(MemoryCategory.BASE_WEIGHTS);
                // NVFP4 matrices: the planner counts each one's f32 tensor scale, which the runtime keeps in a Java field
                long tensorScales = 0;
                for (WeightGroup g : WeightInventory.of(req.spec()).main()) {
                    tensorScales += req.base().of(g.family()) == StorageFormat.NVFP4 && g.linear() ? 4 * g.count() : 0;
                }
                try (CpuBackend cpu = new CpuBackend(1);
                     LoadedModel m = LoadedModel.load(model, cpu, JobReplicas.baseFormat(spec))) {
                    long held = m.model().heldBaseBytes();
                    String what = model.getFileName() + " with base_format " + f + ": held " + held + " B, planned " + planned
                            + " B as " + req.base() + " (" + req.base().formats() + ")";
                    assertEquals(held, planned - tensorScales, what);
                }
            }
        }
        JobSpec fp8 = q.withModel(new ModelSpec(HF.resolve("qwen3_moe"), BaseFormat.FP8));
        JobException e = assertThrows(JobException.class, () -> RlPlan.request(fp8));
        assertTrue(e.getMessage().contains("model.base_format fp8"), e.getMessage());
        assertEquals(assertThrows(JobException.class, () -> JobReplicas.baseFormat(fp8)).getMessage(), e.getMessage(),
                "the runner's refusal");
    }

    @Test
    void theAdapterIsPlannedAsTheRunnerAttachesIt() throws Exception {
        JobSpec q = QuickstartJobTest.quickstart();
        AdapterSpec a = q.adapter();
        for (AdapterSpec adapter : List.of(a,
                new AdapterSpec(AdapterKind.LORA, 4, 8, 0, List.of("q_proj", "v_proj"), List.of("down_proj"), 32),
                new AdapterSpec(AdapterKind.LORA, 16, 32, 0, List.of("o_proj", "gate"), List.of("gate_proj"), 32),
                new AdapterSpec(AdapterKind.LORA, 2, 4, 0, List.of("lm_head"), List.of(), 32),
                new AdapterSpec(AdapterKind.OFT, 16, 32, 0, List.of("q_proj", "o_proj"), List.of(), 24),
                new AdapterSpec(AdapterKind.OFT, 16, 32, 0, List.of("k_proj", "v_proj", "lm_head"), List.of(), 5))) {
            JobSpec spec = q.withAdapter(adapter);
            PlanRequest req = RlPlan.request(spec);
            try (CpuBackend cpu = new CpuBackend(1);
                 LoadedModel m = LoadedModel.load(spec.model().path(), cpu, JobReplicas.baseFormat(spec))) {
                Adapter built = RlSetup.newAdapter(RlSetup.adapterConfig(adapter), (AdapterTargets) m.model(),
                        TensorAllocator.heap(), 1, true);
                long params = 0;
                for (Adapter.Param p : built.params()) {
                    params += p.value().numel();
                    assertEquals(DType.F32, p.value().dtype(), p.name());
                }
                String what = adapter.type() + " " + adapter.targets() + " " + adapter.expertTargets() + ", planned as "
                        + req.adapter();
                assertEquals(params, req.adapter().params(WeightInventory.of(req.spec())), what);
                assertEquals(DType.F32, req.adapter().dtype(), what);
            }
        }
    }

    @Test
    void aStepHoldsTheAdapterBytesOfThePlan(@TempDir Path dir) throws Exception {
        JobSpec spec = QuickstartJobTest.quickstart().withSteps(1)
                .withEval(new org.orbitrl.scheduler.job.EvalSpec(0, "held_out", 4, 1, List.of(1)));
        Map<MemoryCategory, Long> planned = MemoryPlanner.plan(RlPlan.request(spec)).perGpuBytes();
        ForegroundRun.run(spec, dir, new PrintStream(new ByteArrayOutputStream()), new AtomicBoolean());
        JsonNode step = null;
        for (String line : Files.readAllLines(dir.resolve("metrics.jsonl"))) {
            JsonNode n = new ObjectMapper().readTree(line);
            if (n.path("type").asText().equals("step")) {
                step = n;
            }
        }
        assertTrue(step != null, "no step record in metrics.jsonl");
        JsonNode live = step.get("memory_bytes");
        long slot = step.get("extras").get("publish_bytes").asLong();   // one copy of the adapter's parameters
        assertTrue(slot > 0, "publish_bytes " + slot);
        assertEquals(3 * slot, (long) planned.get(MemoryCategory.ADAPTER_PARAMS), "planned: the trainer's copy and two slots");
        for (MemoryCategory c : List.of(MemoryCategory.ADAPTER_PARAMS, MemoryCategory.ADAPTER_GRADS,
                MemoryCategory.OPTIMIZER_STATE)) {
            String key = c.name().toLowerCase(java.util.Locale.ROOT);
            assertEquals((long) planned.get(c), live.path(key).asLong(), key + " held after a step, against the plan: " + live);
        }
    }

    /**
     * What the daemon's memory view shows for a CPU job after a step: the base weights read in place from the
     * checkpoint at the planned bytes (the host allocator never sees them), the adapter's categories as planned.
     */
    @Test
    void theRunnersMemoryViewHoldsThePlannedBaseAndAdapter(@TempDir Path dir) throws Exception {
        JobSpec spec = QuickstartJobTest.quickstart().withSteps(1)
                .withEval(new org.orbitrl.scheduler.job.EvalSpec(0, "held_out", 4, 1, List.of(1)));
        Map<MemoryCategory, Long> planned = MemoryPlanner.plan(RlPlan.request(spec)).perGpuBytes();
        var ctx = new org.orbitrl.scheduler.job.JobContext(spec, dir, dir.resolve("samples"), List.of("cpu:0"), () -> false);
        try (var runner = ForegroundRun.provider(spec.runner()).create(ctx)) {
            runner.plan();
            runner.load(null);
            runner.step();
            List<org.orbitrl.scheduler.job.DeviceMemory> view = runner.memory();
            assertEquals(1, view.size(), view.toString());
            var m = view.getFirst();
            assertEquals("cpu:0", m.device());
            for (MemoryCategory c : List.of(MemoryCategory.BASE_WEIGHTS, MemoryCategory.ADAPTER_PARAMS,
                    MemoryCategory.ADAPTER_GRADS, MemoryCategory.OPTIMIZER_STATE)) {
                assertEquals(planned.get(c), m.live().get(c), c + " live, against the plan: " + m);
                assertEquals(planned.get(c), m.planned().get(c), c + " planned in the view");
            }
            assertTrue(planned.get(MemoryCategory.BASE_WEIGHTS) > 0);
        }
    }
}
