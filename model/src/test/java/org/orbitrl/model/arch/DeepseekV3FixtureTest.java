package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * DeepSeek-V3 against the transformers 5.17 reference ({@code shared/fixtures/hf/deepseek_v3}):
 * f32 compute from bf16 weights; logits and every hidden state within 1e-4 absolute, without a
 * cache (training) and through the latent KV cache; greedy decoding through the cache reproduces
 * {@code greedy.sequence} token for token; and a token-by-token decode gives exactly the training
 * forward's logits, bit for bit (the CPU backend's exact mode is batch-invariant).
 */
public class DeepseekV3FixtureTest {
    static final float ATOL = 1e-4f;

    public static DeepseekV3Model load() {
        return load(Backends.cpu());
    }

    /** The fixture model with its weights in {@code backend}'s memory. */
    public static DeepseekV3Model load(Backend backend) {
        var dir = TestSafetensors.fixtures().resolve("deepseek_v3");
        ModelSpec spec = ConfigLoader.load(dir);
        return DeepseekV3Model.load(DeepseekV3Config.from(spec), spec.mla().ropeInterleave(), spec.quantization(),
                new TestSafetensors(dir.resolve("model.safetensors")), backend, Qwen3Model.LoadOptions.full());
    }

    public static TestSafetensors reference() {
        return new TestSafetensors(TestSafetensors.fixtures().resolve("deepseek_v3/reference.safetensors"));
    }

    public static List<int[]> inputs(TestSafetensors ref) {
        return FixtureRuns.inputRows(ref); // [2, 24]
    }

    @Test
    void prefillThroughTheLatentCacheMatchesTransformers() {
        var ref = reference();
        DeepseekV3Model model = load();
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] s : inputs(ref)) {
            batch.add(new CausalLM.Segment(s, model.newCache(s.length)));
        }
        Map<Integer, float[]> hidden = new HashMap<>();
        Tensor logits = model.forward(batch, (idx, h) -> hidden.put(idx, h.toFloatArray()));
        Qwen3FixtureTest.assertClose("deepseek_v3 cached logits", ref.get("logits").toFloatArray(), logits.toFloatArray(), ATOL);
        for (int i = 0; i <= model.layers(); i++) {
            Qwen3FixtureTest.assertClose("deepseek_v3 cached hidden_states." + i, ref.get("hidden_states." + i).toFloatArray(),
                    hidden.get(i), ATOL);
        }
        assertEquals(24, ((KvCache) batch.get(0).cache()).length());
    }

    @Test
    void withoutCacheMatchesTransformers() {
        var ref = reference();
        DeepseekV3Model model = load();
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] s : inputs(ref)) {
            batch.add(new CausalLM.Segment(s, null));
        }
        Map<Integer, float[]> hidden = new HashMap<>();
        Tensor logits = model.forward(batch, (idx, h) -> hidden.put(idx, h.toFloatArray()));
        Qwen3FixtureTest.assertClose("deepseek_v3 logits", ref.get("logits").toFloatArray(), logits.toFloatArray(), ATOL);
        for (int i = 0; i <= model.layers(); i++) {
            Qwen3FixtureTest.assertClose("deepseek_v3 hidden_states." + i, ref.get("hidden_states." + i).toFloatArray(),
                    hidden.get(i), ATOL);
        }
        Qwen3FixtureTest.assertClose("deepseek_v3 training logits", ref.get("logits").toFloatArray(),
                model.forwardTrain(inputs(ref), false).logits().toFloatArray(), ATOL);
    }

    @Test
    void greedyDecodingThroughTheLatentCacheReproducesTransformers() {
        var ref = reference();
        DeepseekV3Model model = load();
        long[] prompt = ref.get("greedy.prompt").toLongArray();
        long[] expected = ref.get("greedy.sequence").toLongArray();
        KvCache cache = model.newCache(4);
        long[] got = FixtureRuns.greedy(model, prompt, expected.length, cache);
        assertArrayEquals(expected, got, "deepseek_v3 greedy sequence");
        assertEquals(expected.length - 1, cache.length());
    }

    @Test
    void decodingTokenByTokenEqualsTheTrainingForwardBitForBit() {
        DeepseekV3Model model = load();
        int[] seq = inputs(reference()).get(1);
        float[] train = model.forwardTrain(List.of(seq), false).logits().toFloatArray();
        KvCache cache = model.newCache(2);
        int v = model.vocabSize();
        int prompt = 5;
        float[] decoded = new float[train.length];
        Tensor first = model.forward(List.of(new CausalLM.Segment(java.util.Arrays.copyOf(seq, prompt), cache)));
        System.arraycopy(first.toFloatArray(), 0, decoded, 0, prompt * v);
        for (int t = prompt; t < seq.length; t++) {
            Tensor step = model.forward(List.of(new CausalLM.Segment(new int[]{seq[t]}, cache)));
            System.arraycopy(step.toFloatArray(), 0, decoded, t * v, v);
        }
        Qwen3FixtureTest.assertClose("decode vs training forward", train, decoded, 0f);
    }

    @Test
    void cacheHoldsOnlyTheLatentAndTheRopeKey() {
        DeepseekV3Model model = load();
        CausalLM.CacheGeometry g = model.cacheGeometry();
        // kv_lora_rank 16 + qk_rope_head_dim 8, one shared head, no separate values
        assertEquals(new CausalLM.CacheGeometry(3, 1, 24, 0), g);
    }
}
