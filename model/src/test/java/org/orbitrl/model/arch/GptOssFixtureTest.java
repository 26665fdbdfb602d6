package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.PagedSequence;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.orbitrl.model.arch.Qwen3FixtureTest.assertClose;

/**
 * gpt-oss against Hugging Face transformers 5.17 ({@code shared/fixtures/hf/gpt_oss}): f32 compute
 * from the bf16 weights, logits and every hidden state within 1e-4 absolute; decoding one token at
 * a time (both sequences batched, through a contiguous and a paged KV cache), past the sliding
 * window (8) of layer 0, gives the reference logits within 1e-4; greedy decoding reproduces
 * {@code greedy.sequence} token for token.
 */
public class GptOssFixtureTest {
    static final float ATOL = 1e-4f;

    public static Path dir() {
        return TestSafetensors.fixtures().resolve("gpt_oss");
    }

    public static GptOssConfig config() {
        return GptOssConfig.from(ConfigLoader.load(dir()));
    }

    public static GptOssModel model() {
        return model(Backends.cpu());
    }

    /** The fixture model with its weights in {@code backend}'s memory. */
    public static GptOssModel model(Backend backend) {
        return GptOssModel.load(config(), new TestSafetensors(dir().resolve("model.safetensors")), backend,
                GptOssModel.LoadOptions.full());
    }

    public static List<int[]> inputRows(TestSafetensors ref) {
        return FixtureRuns.inputRows(ref);
    }

    @Test
    void configHasTheFeaturesUnderTest() {
        GptOssConfig c = config();
        assertTrue(c.isSliding(0) && !c.isSliding(1), "layer 0 sliding, layer 1 full");
        assertEquals(8, c.slidingWindow());
        assertTrue(c.attentionBias());
        assertTrue(inputRows(new TestSafetensors(dir().resolve("reference.safetensors"))).get(0).length
                > c.slidingWindow(), "the reference sequences are longer than the window");
    }

    @Test
    void logitsAndHiddenStatesMatchTransformers() {
        var ref = new TestSafetensors(dir().resolve("reference.safetensors"));
        GptOssModel model = model();
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] row : inputRows(ref)) {
            batch.add(new CausalLM.Segment(row, model.newCache(row.length)));
        }
        Map<Integer, float[]> hidden = new HashMap<>();
        Tensor logits = model.forward(batch, (idx, h) -> hidden.put(idx, h.toFloatArray()));
        assertClose("gpt_oss logits", ref.get("logits").toFloatArray(), logits.toFloatArray(), ATOL);
        System.out.printf("gpt_oss logits: worst |ours - transformers| %.3g%n",
                maxAbsDiff(ref.get("logits").toFloatArray(), logits.toFloatArray()));
        for (int i = 0; i <= model.layers(); i++) {
            assertClose("gpt_oss hidden_states." + i, ref.get("hidden_states." + i).toFloatArray(), hidden.get(i), ATOL);
        }
    }

    @Test
    void decodingTokenByTokenAcrossTheWindowMatchesTheReference() {
        var ref = new TestSafetensors(dir().resolve("reference.safetensors"));
        GptOssModel model = model();
        var geometry = model.cacheGeometry();
        BlockPool pool = new BlockPool(org.orbitrl.kernels.TensorAllocator.heap(), geometry.layers(), geometry.kvHeads(),
                geometry.headDim(), geometry.vHeadDim(), 4, 16);
        List<int[]> rows = inputRows(ref);
        // both rows decode together, one in a contiguous cache and one in 4-token pages
        List<SequenceCache> caches = List.of(model.newCache(2), new PagedSequence(pool));
        int t = rows.get(0).length;
        int v = model.vocabSize();
        float[] expected = ref.get("logits").toFloatArray(); // [B, T, V]
        float[][] got = FixtureRuns.decodeInSteps(model, rows, caches, 3); // then single tokens: positions 3..T-1 cross the window of 8
        for (int b = 0; b < rows.size(); b++) {
            assertEquals(t, caches.get(b).length());
            assertClose("gpt_oss decode logits, row " + b + " (" + caches.get(b).getClass().getSimpleName() + ")",
                    FixtureRuns.row(expected, b, t, v), got[b], ATOL);
        }
        ((PagedSequence) caches.get(1)).close();
        assertEquals(16, pool.freeBlocks(), "the paged sequence gave its blocks back");
    }

    @Test
    void greedyDecodingThroughTheCacheReproducesTransformers() {
        var ref = new TestSafetensors(dir().resolve("reference.safetensors"));
        GptOssModel model = model();
        long[] prompt = ref.get("greedy.prompt").toLongArray();
        long[] expected = ref.get("greedy.sequence").toLongArray();
        assertTrue(expected.length > config().slidingWindow(), "greedy sequence crosses the window");
        long[] got = FixtureRuns.greedy(model, prompt, expected.length, model.newCache(4));
        assertArrayEquals(expected, got, "gpt_oss greedy sequence");
    }

    static float maxAbsDiff(float[] a, float[] b) {
        float m = 0;
        for (int i = 0; i < a.length; i++) {
            m = Math.max(m, Math.abs(a[i] - b[i]));
        }
        return m;
    }
}
