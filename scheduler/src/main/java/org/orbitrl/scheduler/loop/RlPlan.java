package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.memory.plan.AdapterSpec;
import org.orbitrl.memory.plan.BaseFormat;
import org.orbitrl.memory.plan.BatchShape;
import org.orbitrl.memory.plan.MemoryPlan;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.memory.plan.NodeSpec;
import org.orbitrl.memory.plan.ParallelLayout;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.memory.plan.PlanTable;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.scheduler.job.AdapterKind;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobPlan;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.PlanRefusedException;

import java.util.Map;

/** The memory plan of an RL job on the CPU backend: the host's memory as one device. */
final class RlPlan {
    private RlPlan() {
    }

    static JobPlan plan(JobSpec spec) throws JobException {
        try {
            ModelSpec model = ConfigLoader.load(spec.model().path());
            long host = Math.max(Runtime.getRuntime().maxMemory(), 1L << 30);
            NodeSpec node = new NodeSpec("cpu", 1, host);
            var a = spec.adapter();
            AdapterSpec adapter = AdapterSpec.parse(a.type() == AdapterKind.LORA ? "lora:" + a.rank() : "oft:" + a.oftBlockSize());
            var b = spec.batch();
            PlanRequest req = new PlanRequest(model, spec.model().path(), BaseFormat.parse("native", model), adapter,
                    new BatchShape(b.promptsPerStep(), b.samplesPerPrompt(), b.maxPromptTokens(), b.maxResponseTokens(),
                            b.microBatch()), node, ParallelLayout.auto(model, node, 0, 0), spec.memory().recompute(),
                    Math.max(1, spec.memory().expertChunk() == 0 ? PlanRequest.DEFAULT_EXPERT_CHUNK : spec.memory().expertChunk()),
                    DType.F32, 2048, 8192, 0);
            MemoryPlan plan = MemoryPlanner.plan(req);
            String table = PlanTable.render(plan);
            if (!plan.fits()) {
                throw new PlanRefusedException("job " + spec.name() + " does not fit this host's memory:\n" + table);
            }
            Map<String, Map<MemoryCategory, Long>> bytes = Map.of("cpu:0", plan.perGpuBytes());
            return new JobPlan(bytes, table);
        } catch (PlanRefusedException e) {
            throw e;
        } catch (RuntimeException e) {
            throw new JobException("planning job " + spec.name() + ": " + e.getMessage(), e);
        }
    }
}
