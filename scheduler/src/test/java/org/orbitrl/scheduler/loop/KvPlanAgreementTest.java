package org.orbitrl.scheduler.loop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.scheduler.job.BaseFormat;
import org.orbitrl.scheduler.job.BatchSpec;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.ModelSpec;
import org.orbitrl.scheduler.rollout.RolloutEngine;

/**
 * The rollout KV cache a job's engine allocates against the planner's KV_CACHE bytes for the same job, on every
 * architecture's transformers fixture and on the quickstart model, at short sequences (the pool's floor of blocks) and
 * long ones: equal for the paged pool (Qwen3, Qwen3-MoE, gpt-oss with its sliding-window layers, DeepSeek-V3's latent
 * cache); DeepSeek V4's pool holds no rows (the model keeps its decode state beside it, which the planner counts).
 */
class KvPlanAgreementTest {
    private static final Path HF = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf");

    /** Counts KV_CACHE bytes; everything else as the heap allocator does. */
    private static final class Counting implements TensorAllocator {
        final AtomicLong kv = new AtomicLong();

        @Override
        public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
            Tensor t = TensorAllocator.heap().allocate(category, dtype, shape);
            if (category == MemoryCategory.KV_CACHE) {
                kv.addAndGet(t.byteSize());
            }
            return t;
        }
    }

    @Test
    void theEngineAllocatesThePlannedCache() throws Exception {
        JobSpec q = QuickstartJobTest.quickstart();
        List<Path> models = new ArrayList<>(List.of(q.model().path()));
        for (String arch : List.of("qwen3", "qwen3_moe", "gpt_oss", "deepseek_v3", "deepseek_v4")) {
            models.add(HF.resolve(arch));
        }
        List<String> report = new ArrayList<>();
        for (Path model : models) {
            for (int[] lens : List.of(new int[]{16, 32}, new int[]{200, 900})) {
                BatchSpec b = q.batch();
                JobSpec spec = q.withModel(new ModelSpec(model, BaseFormat.AUTO)).withAdapter(new org.orbitrl.scheduler.job.AdapterSpec(
                        org.orbitrl.scheduler.job.AdapterKind.LORA, 4, 8, 0, List.of("lm_head"), List.of(), 32)).withBatch(new BatchSpec(b.promptsPerStep(),
                        b.samplesPerPrompt(), lens[0], lens[1], b.microBatch()));
                var req = RlPlan.request(spec);
                long planned = MemoryPlanner.plan(req).perGpuBytes().get(MemoryCategory.KV_CACHE);
                assertEquals(JobReplicas.engineOptions(spec, 1).maxBatchTokens(), org.orbitrl.memory.plan.MemoryPlanner
                        .rolloutBatchTokens(req, (long) b.promptsPerStep() * b.samplesPerPrompt()),
                        "the planner's prefill tokens are the engine's");
                Counting c = new Counting();
                try (CpuBackend cpu = new CpuBackend(1, c);
                     LoadedModel m = LoadedModel.load(model, cpu, JobReplicas.baseFormat(spec))) {
                    c.kv.set(0);
                    new RolloutEngine((CausalLM) m.model(), null, JobReplicas.engineOptions(spec, 1), ids -> "");
                }
                String what = model.getFileName() + " " + lens[0] + "+" + lens[1] + ": engine " + c.kv.get() + " B, planned "
                        + planned + " B";
                report.add(what);
                if (model.getFileName().toString().equals("deepseek_v4")) {
                    assertEquals(0, c.kv.get(), what);
                    assertTrue(planned > 0, what);
                } else {
                    assertEquals(planned, c.kv.get(), what);
                }
            }
        }
        System.out.println(String.join("\n", report));
    }
}
