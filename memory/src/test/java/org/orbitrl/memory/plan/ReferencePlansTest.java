package org.orbitrl.memory.plan;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.MemoryCategory;

/**
 * The reference plans kept in {@code docs/plans}: Kimi-K2.6 with an INT4 base and DeepSeek V4 Pro
 * with an FP4 base fit one 8xB200 node with a LoRA adapter; the same models with a BF16 base, or
 * trained in full with AdamW, do not.
 */
class ReferencePlansTest {
    private static final NodeSpec B200 = NodeSpec.parse("8xB200");

    static PlanRequest request(String model, String base, String adapter) {
        Path cfg = TestModels.configOf("models/" + model);
        var spec = org.orbitrl.model.spec.ConfigLoader.load(cfg);
        return PlanRequest.defaults(spec, cfg, B200).withBase(BaseFormat.parse(base, spec))
                .withAdapter(AdapterSpec.parse(adapter)).withBatch(new BatchShape(64, 8, 1024, 4096, 1));
    }

    @Test
    void kimiInt4LoraFits() {
        MemoryPlan p = MemoryPlanner.check(request("kimi-k2.6", "int4", "lora:32"));
        System.out.println(PlanTable.render(p));
        assertTrue(p.fits());
    }

    @Test
    void deepseekV4ProFp4LoraFits() {
        MemoryPlan p = MemoryPlanner.check(request("deepseek-v4-pro", "fp4", "lora:32"));
        System.out.println(PlanTable.render(p));
        assertTrue(p.fits());
    }

    @Test
    void bf16BasesDoNotFit() {
        for (String m : new String[] {"kimi-k2.6", "deepseek-v4-pro"}) {
            PlanRefusedException e = assertThrows(PlanRefusedException.class,
                    () -> MemoryPlanner.check(request(m, "bf16", "lora:32")));
            System.out.println(e.getMessage());
            assertEquals(MemoryCategory.BASE_WEIGHTS, e.plan().tightest().overflowCategory());
        }
    }

    @Test
    void fullParameterAdamDoesNotFit() {
        for (String m : new String[] {"kimi-k2.6", "deepseek-v4-pro"}) {
            PlanRefusedException e = assertThrows(PlanRefusedException.class,
                    () -> MemoryPlanner.check(request(m, "bf16", "full")));
            System.out.println(e.getMessage());
            assertFalse(e.plan().fits());
        }
    }
}
