package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.PagedSequence;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The latent cache in the rollout engine's paged pool: a {@link BlockPool} built from
 * {@link DeepseekV3Model#cacheGeometry()} stores kv_lora_rank + qk_rope_head_dim f32 numbers per
 * token and layer and nothing else, and decoding through a {@link PagedSequence} (blocks of 4,
 * then a forked sequence that copies its shared partial block on write) gives the logits of the
 * contiguous {@link KvCache} path within 1e-6, and the fixture's greedy tokens.
 */
public class DeepseekV3PagedCacheTest {

    @Test
    void pagedLatentCacheDecodesLikeTheContiguousOne() {
        DeepseekV3Model model = DeepseekV3FixtureTest.load();
        var ref = new TestSafetensors(TestSafetensors.fixtures().resolve("deepseek_v3/reference.safetensors"));
        CausalLM.CacheGeometry g = model.cacheGeometry();
        var pool = new BlockPool(model.backend().allocator(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), 4, 32);
        assertEquals(3L * (16 + 8) * DType.F32.bytes(), pool.bytesPerToken(), "bytes per token: 3 layers x (16 + 8) f32");

        long[] prompt = ref.get("greedy.prompt").toLongArray();
        long[] expected = ref.get("greedy.sequence").toLongArray();
        int[] p = new int[prompt.length];
        for (int i = 0; i < p.length; i++) {
            p[i] = (int) prompt[i];
        }
        KvCache contiguous = model.newCache(8);
        PagedSequence paged = new PagedSequence(pool);
        Tensor a = model.forward(List.of(new CausalLM.Segment(p, contiguous)));
        Tensor b = model.forward(List.of(new CausalLM.Segment(p, paged)));
        Qwen3FixtureTest.assertClose("prompt logits, paged vs contiguous", a.toFloatArray(), b.toFloatArray(), 1e-6f);
        int next = argmaxLast(b);
        PagedSequence fork = null;
        for (int step = 0; step < 6; step++) {
            assertEquals(expected[prompt.length + step], next, "greedy token " + step);
            if (step == 1) {
                fork = paged.fork(); // shares a partial block; the next write copies it
            }
            Tensor la = model.forward(List.of(new CausalLM.Segment(new int[]{next}, contiguous)));
            Tensor lb = model.forward(List.of(new CausalLM.Segment(new int[]{next}, paged)));
            Qwen3FixtureTest.assertClose("step " + step + " logits, paged vs contiguous", la.toFloatArray(), lb.toFloatArray(), 1e-6f);
            next = argmaxLast(lb);
        }
        // the fork continues from where it was taken, unaffected by the original's later writes
        KvCache replay = model.newCache(16);
        int[] prefix = new int[prompt.length + 2];
        for (int i = 0; i < prefix.length; i++) {
            prefix[i] = (int) expected[i];
        }
        model.forward(List.of(new CausalLM.Segment(java.util.Arrays.copyOf(prefix, prefix.length - 1), replay)));
        Tensor lr = model.forward(List.of(new CausalLM.Segment(new int[]{prefix[prefix.length - 1]}, replay)));
        Tensor lf = model.forward(List.of(new CausalLM.Segment(new int[]{prefix[prefix.length - 1]}, fork)));
        Qwen3FixtureTest.assertClose("forked sequence logits", lr.toFloatArray(), lf.toFloatArray(), 1e-6f);
        paged.close();
        fork.close();
        assertEquals(32, pool.freeBlocks());
    }

    private static int argmaxLast(Tensor logits) {
        float[] last = logits.select(0, logits.dim(0) - 1).toFloatArray();
        int best = 0;
        for (int v = 1; v < last.length; v++) {
            if (last[v] > last[best]) {
                best = v;
            }
        }
        return best;
    }
}
