package org.orbitrl.model.arch;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.PagedSequence;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A Qwen3 config with sliding-window layers ({@code use_sliding_window}, {@code layer_types}) runs them with their
 * window. The fixture's weights under a config whose second layer slides over 5 positions: a query at a position
 * below 5 sees every key either way, so its logits equal transformers' full-attention reference within 1e-4; later
 * positions lose keys and move off it; decoding through a contiguous cache and through 4-token pages equals the
 * one-shot forward bit for bit, and so does a config whose window covers the whole sequence against the reference.
 */
class Qwen3SlidingWindowTest {
    private static final int WINDOW = 5;

    private static Path configWith(Path dir, int window) throws Exception {
        Path src = TestSafetensors.fixtures().resolve("qwen3");
        ObjectMapper json = new ObjectMapper();
        ObjectNode c = (ObjectNode) json.readTree(src.resolve("config.json").toFile());
        c.put("use_sliding_window", true);
        c.put("sliding_window", window);
        c.putArray("layer_types").add("full_attention").add("sliding_attention");
        Files.writeString(dir.resolve("config.json"), json.writeValueAsString(c));
        return dir;
    }

    private static Qwen3Model model(Path configDir) {
        DecoderConfig c = DecoderConfig.from(ConfigLoader.load(configDir));
        return Qwen3Model.load(c, new TestSafetensors(TestSafetensors.fixtures().resolve("qwen3").resolve("model.safetensors")),
                Backends.cpu(), Qwen3Model.LoadOptions.full());
    }

    @Test
    void theSlidingLayerSeesOnlyItsWindow(@TempDir Path dir) throws Exception {
        Qwen3Model model = model(configWith(dir, WINDOW));
        assertArrayEquals(new int[]{0, WINDOW}, model.config().windows());
        var ref = new TestSafetensors(TestSafetensors.fixtures().resolve("qwen3").resolve("reference.safetensors"));
        List<int[]> rows = FixtureRuns.inputRows(ref);
        int t = rows.get(0).length;
        int v = model.vocabSize();
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] r : rows) {
            batch.add(new CausalLM.Segment(r, null));
        }
        float[] got = FixtureRuns.host(model, model.forward(batch));   // [B*T, V]
        float[] expected = ref.get("logits").toFloatArray();            // [B, T, V]
        float off = 0;
        for (int b = 0; b < rows.size(); b++) {
            for (int p = 0; p < t; p++) {
                float d = 0;
                for (int i = 0; i < v; i++) {
                    d = Math.max(d, Math.abs(got[(b * t + p) * v + i] - expected[(b * t + p) * v + i]));
                }
                if (p < WINDOW) {
                    assertTrue(d <= 1e-4f, "row " + b + " position " + p + " sees all its keys: " + d + " off the reference");
                } else {
                    off = Math.max(off, d);
                }
            }
        }
        assertTrue(off > 1e-2f, "positions past the window lose keys and must move off the reference: " + off);

        // a contiguous cache and 4-token pages, a 3-token prefill then single tokens across the window
        var g = model.cacheGeometry();
        BlockPool pool = new BlockPool(TensorAllocator.heap(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), 4, 16);
        List<SequenceCache> caches = List.of(model.newCache(2), new PagedSequence(pool));
        float[][] stepped = FixtureRuns.decodeInSteps(model, rows, caches, 3);
        for (int b = 0; b < rows.size(); b++) {
            assertArrayEquals(java.util.Arrays.copyOfRange(got, b * t * v, (b + 1) * t * v), stepped[b],
                    "row " + b + " decoded through a " + caches.get(b).getClass().getSimpleName());
        }
    }

    @Test
    void aWindowCoveringTheSequenceIsFullAttention(@TempDir Path dir) throws Exception {
        var ref = new TestSafetensors(TestSafetensors.fixtures().resolve("qwen3").resolve("reference.safetensors"));
        List<int[]> rows = FixtureRuns.inputRows(ref);
        Qwen3Model model = model(configWith(dir, rows.get(0).length));
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] r : rows) {
            batch.add(new CausalLM.Segment(r, null));
        }
        Qwen3FixtureTest.assertClose("qwen3 logits, window " + rows.get(0).length, ref.get("logits").toFloatArray(),
                FixtureRuns.host(model, model.forward(batch)), Qwen3FixtureTest.ATOL);
        assertEquals(rows.get(0).length, model.config().windows()[1]);
    }
}
