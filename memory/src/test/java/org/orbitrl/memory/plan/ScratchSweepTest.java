package org.orbitrl.memory.plan;

import org.junit.jupiter.api.Test;

class ScratchSweepTest {
    @Test
    void sweep() {
        for (String m : new String[] {"kimi-k2.6", "deepseek-v4-pro", "deepseek-v4-flash"}) {
            for (String a : new String[] {"lora:32", "lora:16", "lora:8", "lora:32:attention+shared+dense", "lora:64:attention+shared+dense", "oft:32"}) {
                for (int tp : new int[] {1, 2}) {
                    PlanRequest r = ReferencePlansTest.request(m, m.startsWith("kimi") ? "int4" : "fp4", a);
                    r = r.withLayout(ParallelLayout.colocated(8, tp));
                    MemoryPlan p = MemoryPlanner.plan(r);
                    System.out.printf("%-18s %-34s tp%d total %s headroom %s adapter %s maxPrompts %d maxMicro %d chunk %d%n", m, a, tp,
                        Bytes.format(p.tightest().total()), Bytes.format(p.tightest().headroom()), Bytes.params(p.adapterParams()),
                        p.maxPrompts(), p.maxMicroBatch(), p.maxSafeExpertChunk());
                }
            }
        }
    }
}
