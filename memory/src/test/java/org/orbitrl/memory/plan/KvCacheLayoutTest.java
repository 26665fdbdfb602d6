package org.orbitrl.memory.plan;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.model.spec.ModelSpec;

/** KV cache bytes against closed forms written from each architecture's published dimensions. */
class KvCacheLayoutTest {

    @Test
    void gqaIsKeysAndValuesOfEveryKvHead() {
        // Qwen3-30B-A3B: 4 KV heads of 128, K and V, bf16: 4 * 2 * 128 * 2 = 2048 B per token and layer.
        ModelSpec q = TestModels.spec("models/qwen3-30b-a3b");
        for (int layer : new int[] {0, 17, 47}) {
            assertEquals(2048, KvCacheLayout.bytesPerToken(q, layer));
            assertEquals(1024, KvCacheLayout.bytesPerToken(q, layer, DType.F8E4M3));
        }
        assertEquals(48L * 2048 * 5000, KvCacheLayout.bytesPerSequence(q, 5000, DType.BF16));
    }

    @Test
    void gptOssSlidingLayersKeepTheirWindow() {
        // gpt-oss-20b: 8 KV heads of 64: 8*2*64*2 = 2048 B per token; half the layers slide over 128 tokens.
        ModelSpec g = TestModels.spec("models/gpt-oss-20b");
        assertEquals(2048, KvCacheLayout.bytesPerToken(g, 0));
        assertEquals(128L * 2048, KvCacheLayout.bytesForSequence(g, 0, 1000, DType.BF16));    // sliding
        assertEquals(1000L * 2048, KvCacheLayout.bytesForSequence(g, 1, 1000, DType.BF16));   // full
        assertEquals(100L * 2048, KvCacheLayout.bytesForSequence(g, 0, 100, DType.BF16));     // shorter than the window
        assertEquals(12L * (128 + 1000) * 2048, KvCacheLayout.bytesPerSequence(g, 1000, DType.BF16));
    }

    /**
     * gpt-oss-120b's rollout pools at 256 sequences of 8192 tokens and 16384 new tokens a forward: the 18 full layers
     * hold every position (512 blocks of 16 a sequence, and one more); the 18 sliding layers a window pool of 256 x
     * (127 / 16 + 2) = 2304 blocks for the running windows and 1024 + 256 for one forward's prefill, and a block of
     * zeros; 2 x 8 x 64 x 2 = 2048 B a position and layer in bf16.
     */
    @Test
    void gptOssSlidingLayersHaveAWindowPool() {
        ModelSpec g = TestModels.spec("models/gpt-oss-120b");
        assertEquals(128, KvCacheLayout.windowPoolWindow(g));
        assertEquals(256L * 513, KvCacheLayout.pagedBlocks(256, 8192));
        assertEquals(2304 + 1024 + 256, KvCacheLayout.windowBlocks(256, 8192, 128, 16384));
        long full = 256L * 513 * 16 * 18 * 2048;
        long sliding = (2304 + 1024 + 256 + 1L) * 16 * 18 * 2048;
        assertEquals(full + sliding, KvCacheLayout.pagedPoolBytes(g, 256, 8192, 16384, DType.BF16));
        // the sliding layers' share: 3585 blocks instead of 131328, under 1/36 of it
        assertEquals(0, KvCacheLayout.windowPoolWindow(TestModels.spec("models/qwen3-30b-a3b")), "no sliding layers");
        assertEquals(0, KvCacheLayout.windowPoolWindow(TestModels.spec("models/deepseek-v3")), "MLA: one pool");
        // a short job: no more blocks than the layers would hold in the main pool, at least 64
        assertEquals(KvCacheLayout.pagedBlocks(2, 48), KvCacheLayout.windowBlocks(2, 48, 128, 4096));
        assertEquals(64, KvCacheLayout.windowBlocks(4, 64, 8, 16));
        assertEquals(64, KvCacheLayout.windowBlocks(4, 4096, 8, 16), "long sequences prefilled in chunks: no more blocks");
        assertEquals(100 * 2 + 256 + 100, KvCacheLayout.windowBlocks(100, 4096, 8, 4096));
    }

    @Test
    void mlaIsTheCompressedLatentPlusTheRopeKey() {
        // Kimi-K2 / DeepSeek-V3: kv_lora_rank 512 + qk_rope_head_dim 64 = 576 elements, 1152 B in bf16,
        // against 64 heads * (192 + 128) * 2 = 40960 B had the keys and values been expanded.
        for (String m : new String[] {"models/kimi-k2.6", "models/deepseek-v3"}) {
            ModelSpec s = TestModels.spec(m);
            assertEquals(1152, KvCacheLayout.bytesPerToken(s, 0), m);
            assertEquals(61L * 1152 * 4096, KvCacheLayout.bytesPerSequence(s, 4096, DType.BF16), m);
            assertEquals(1, KvCacheLayout.tensorParallelSplit(s, 8), m + ": the latent is replicated across TP");
        }
        assertEquals(4, KvCacheLayout.tensorParallelSplit(TestModels.spec("models/qwen3-30b-a3b"), 8),
                "GQA heads split over at most their number");
    }

    @Test
    void deepseekV4CompressedAndSlidingLayers() {
        // V4 Flash: head_dim 512, one shared K=V head, window 128, index_head_dim 128; layers 0-1 sliding,
        // then CSA (ratio 4) and HCA (ratio 128) alternate.
        ModelSpec f = TestModels.spec("models/deepseek-v4-flash");
        long t = 10_000;
        long window = 128L * 512 * 2;
        assertEquals(1024, KvCacheLayout.bytesPerToken(f, 0));
        assertEquals(window, KvCacheLayout.bytesForSequence(f, 0, t, DType.BF16));                    // sliding only
        long csaState = (2L * 4 * 1024 + 2L * 4 * 512 + 2L * 4 * 256 + 2L * 4 * 128) * 2;
        assertEquals(window + t / 4 * (512 + 128) * 2 + csaState, KvCacheLayout.bytesForSequence(f, 2, t, DType.BF16));
        long hcaState = 2L * 128 * 512 * 2;
        assertEquals(window + t / 128 * 512 * 2 + hcaState, KvCacheLayout.bytesForSequence(f, 3, t, DType.BF16));
        assertEquals(4, KvCacheLayout.compressRate(f, 2));
        assertEquals(128, KvCacheLayout.compressRate(f, 3));
        assertEquals(0, KvCacheLayout.compressRate(f, 1));
        // 2 sliding + 21 CSA + 20 HCA layers.
        assertEquals(2 * window + 21 * (window + t / 4 * 1280 + csaState) + 20 * (window + t / 128 * 1024 + hcaState),
                KvCacheLayout.bytesPerSequence(f, t, DType.BF16));
    }
}
