package org.orbitrl.memory.plan;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DeepseekV3Config;
import org.orbitrl.model.arch.DeepseekV3Model;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.spec.ModelSpec;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Multi-head latent attention's KV cache is sized the same by the memory planner
 * ({@link KvCacheLayout}) and by what the rollout engine allocates: a {@link BlockPool} built from
 * the model's cache geometry, whose KV_CACHE allocations are counted here. Per token and layer both
 * hold {@code kv_lora_rank + qk_rope_head_dim} elements (576 for DeepSeek-V3 and Kimi-K2.x).
 */
class MlaKvCacheAgreementTest {

    @ParameterizedTest
    @ValueSource(strings = {"models/deepseek-v3", "models/kimi-k2.6", "models/kimi-k2-instruct", "fixtures/deepseek_v3"})
    void plannerAndPagedPoolAgreeOnBytesPerToken(String name) {
        ModelSpec spec = TestModels.spec(name);
        DeepseekV3Config c = DeepseekV3Config.from(spec);
        CausalLM.CacheGeometry g = DeepseekV3Model.cacheGeometry(c);
        long planned = 0;
        for (int l = 0; l < spec.numLayers(); l++) {
            planned += KvCacheLayout.bytesPerToken(spec, l, DType.F32);
        }
        int elements = spec.mla().kvLoraRank() + spec.mla().qkRopeHeadDim();
        assertEquals((long) spec.numLayers() * elements * DType.F32.bytes(), planned, name + ": planner bytes per token");
        if (name.startsWith("models/")) {
            assertEquals(576, elements, name + ": kv_lora_rank + qk_rope_head_dim");
        }
        assertEquals(planned, BlockPool.bytesPerToken(g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim()),
                name + ": block pool bytes per token");

        // what a pool for 2 blocks of 16 tokens really allocates, on a model with at most 2 layers
        int layers = Math.min(2, g.layers());
        long[] allocated = new long[1];
        TensorAllocator counting = (category, dtype, shape) -> {
            Tensor t = TensorAllocator.heap().allocate(category, dtype, shape);
            if (category == MemoryCategory.KV_CACHE) {
                allocated[0] += t.byteSize();
            }
            return t;
        };
        new BlockPool(counting, layers, g.kvHeads(), g.headDim(), g.vHeadDim(), 16, 2);
        long perLayerPlanned = KvCacheLayout.bytesPerToken(spec, 0, DType.F32);
        assertEquals(32L * layers * perLayerPlanned, allocated[0], name + ": bytes the pool allocated for 32 tokens");
    }
}
