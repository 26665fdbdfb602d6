package org.orbitrl.scheduler.rollout;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.memory.plan.KvCacheLayout;
import org.orbitrl.model.LoadedModel;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/** The rollout engine's KV pool stores exactly what the memory planner budgets per token (f32 on the CPU). */
class KvCacheSizeTest {
    @Test
    void engineBytesPerTokenEqualThePlannersFormula() {
        for (String arch : List.of("qwen3", "qwen3_moe")) {
            try (LoadedModel m = RolloutEngineTest.model(arch)) {
                RolloutEngine e = new RolloutEngine(m.model(), null, new RolloutEngine.Options(4, 8, 4, 64), null);
                long planned = 0;
                for (int l = 0; l < m.spec().numLayers(); l++) {
                    planned += KvCacheLayout.bytesPerToken(m.spec(), l, DType.F32);
                }
                assertEquals(planned, e.kvBytesPerToken(), arch);
                // 2 layers x 2 kv heads x (16 + 16) dims x 4 bytes, by hand
                assertEquals(2L * 2 * 32 * 4, e.kvBytesPerToken(), arch);
            }
        }
    }
}
