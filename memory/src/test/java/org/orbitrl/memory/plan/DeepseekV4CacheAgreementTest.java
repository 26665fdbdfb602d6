package org.orbitrl.memory.plan;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.arch.dsv4.DeepseekV4Model;
import org.orbitrl.model.checkpoint.Checkpoint;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.spec.ModelSpec;

import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4's cache as the memory planner sizes it ({@link KvCacheLayout}) against what the
 * model really keeps, measured on the fixture while a sequence is prefilled and decoded: the
 * per-token part (the shared K=V head of the window) equals the model's cache geometry and the
 * rollout engine's block pool; the compressed entries (pooled KV, and the indexer keys on
 * compressed-sparse layers) agree byte for byte at every length; and the whole per-layer state
 * stays within the planner's figure by no more than the planner's fixed compressor-state bound
 * plus one window row (the planner counts the window at {@code sliding_window} rows and the
 * open windows full, the model holds {@code sliding_window-1} rows and never a full open window).
 */
public class DeepseekV4CacheAgreementTest {

    @Test
    void plannerAndModelAgreeOnV4CacheBytes() {
        ModelSpec spec = TestModels.spec("fixtures/deepseek_v4");
        try (Checkpoint ck = Checkpoint.open(TestModels.fixtures().resolve("deepseek_v4"))) {
            DeepseekV4Model model = DeepseekV4Model.load(spec, ck, Backends.cpu());
            // the model keeps its decode state itself: a rollout engine's paged pool holds no rows for it
            CausalLM.CacheGeometry g = model.cacheGeometry();
            BlockPool pool = new BlockPool(TensorAllocator.heap(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), 16, 2);
            assertEquals(0, pool.bytesPerToken(), "per-token bytes of the rollout block pool");
            assertEquals(0, KvCacheLayout.pagedPoolBytes(spec, 4, 100, 4096, DType.F32), "the planner's paged pool");

            Random rnd = new Random(7);
            KvCache cache = model.newCache(4);
            int t = 0;
            int checked = 0;
            while (t < 37) {
                int len = t == 0 ? 13 : 1;
                int[] toks = new int[len];
                for (int i = 0; i < len; i++) {
                    toks[i] = 1 + rnd.nextInt(model.vocabSize() - 1);
                }
                model.forward(List.of(new CausalLM.Segment(toks, cache)));
                t += len;
                for (int l = 0; l < spec.numLayers(); l++) {
                    int rate = KvCacheLayout.compressRate(spec, l);
                    long entries = rate == 0 ? 0 : t / rate * KvCacheLayout.bytesPerCompressedEntry(spec, l, DType.F32);
                    assertEquals(entries, model.compressedEntryBytes(cache, l), "layer " + l + " compressed entries at " + t);
                    long plan = KvCacheLayout.bytesForSequence(spec, l, t, DType.F32);
                    long real = model.stateBytes(cache, l);
                    long slack = KvCacheLayout.compressorStateBytes(spec, l, DType.F32)
                            + KvCacheLayout.bytesPerToken(spec, l, DType.F32);
                    assertTrue(real <= plan && plan - real <= slack, "layer " + l + " at " + t + " tokens: model keeps "
                            + real + " bytes, planner " + plan + " (allowed slack " + slack + ")");
                    checked++;
                }
            }
            assertEquals(t, cache.length());
            assertTrue(checked > 0);
        }
    }
}
