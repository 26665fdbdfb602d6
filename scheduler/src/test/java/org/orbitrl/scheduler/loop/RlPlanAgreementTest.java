package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.memory.plan.WeightInventory;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.scheduler.job.AdapterKind;
import org.orbitrl.scheduler.job.AdapterSpec;
import org.orbitrl.scheduler.job.JobSpec;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * A job is planned with the adapter its runner attaches: for the job's {@code adapter} section, the planned parameters
 * and their element type equal the adapter the runner builds on the loaded model.
 */
class RlPlanAgreementTest {
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
                        TensorAllocator.heap(), 1);
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
}
