package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.FixtureRuns;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * DeepSeek V4 against transformers 5.17 ({@code shared/fixtures/hf/deepseek_v4}): f32 compute
 * from bf16 weights; logits and every hidden state (0..L-1 as [B,T,hc,H], L after the final
 * norm) within 1e-4 absolute; prefill in chunks through the cache equals the one-shot forward;
 * greedy decoding through the cache reproduces {@code greedy.sequence} exactly.
 */
public class DeepseekV4FixtureTest {
    static final float ATOL = 1e-4f;

    static Path dir() {
        return TestSafetensors.fixtures().resolve("deepseek_v4");
    }

    static DeepseekV4Model load() {
        return DeepseekV4Model.load(ConfigLoader.load(dir()), new TestSafetensors(dir().resolve("model.safetensors")),
                Backends.cpu());
    }

    static List<int[]> rows(Tensor ids) {
        return FixtureRuns.inputRows(ids);
    }

    /** A hash layer's table naming an expert the layer does not have is refused as the model loads, naming the entry. */
    @Test
    void aHashTableNamingAMissingExpertIsRefusedAtLoad() {
        TestSafetensors file = new TestSafetensors(dir().resolve("model.safetensors"));
        String table = "model.layers.0.ffn.gate.tid2eid";
        long[] stored = file.get(table).toLongArray();
        int[] bad = new int[stored.length];
        for (int i = 0; i < bad.length; i++) {
            bad[i] = (int) stored[i];
        }
        var c = ConfigLoader.load(dir());
        for (int value : new int[]{c.moe().numExperts(), -1}) {
            bad[2 * 37 + 1] = value;    // token 37's second expert
            org.orbitrl.model.nn.WeightSource src = new org.orbitrl.model.nn.WeightSource() {
                public boolean has(String name) {
                    return file.has(name);
                }

                public Tensor tensor(String name, long... shape) {
                    return name.equals(table) ? Tensor.ofInts(bad, shape) : file.tensor(name, shape);
                }

                public java.util.Set<String> names() {
                    return file.names();
                }
            };
            IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                    () -> DeepseekV4Model.load(c, src, Backends.cpu()));
            assertEquals(table + "[37] names expert " + value + ": expected 0 to " + (c.moe().numExperts() - 1), e.getMessage());
        }
    }

    @Test
    void logitsAndHiddenStatesMatchTransformers() {
        var ref = new TestSafetensors(dir().resolve("reference.safetensors"));
        DeepseekV4Model model = load();
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] r : rows(ref.get("input_ids"))) {
            batch.add(new CausalLM.Segment(r, null));
        }
        Map<Integer, float[]> hidden = new HashMap<>();
        Tensor logits = model.forward(batch, (idx, h) -> hidden.put(idx, h.toFloatArray()));
        for (int i = 0; i <= model.layers(); i++) {
            Qwen3FixtureTest.assertClose("deepseek_v4 hidden_states." + i, ref.get("hidden_states." + i).toFloatArray(),
                    hidden.get(i), ATOL);
        }
        Qwen3FixtureTest.assertClose("deepseek_v4 logits", ref.get("logits").toFloatArray(), logits.toFloatArray(), ATOL);
    }

    @Test
    void chunkedPrefillAndDecodeThroughTheCacheMatchTheOneShotForward() {
        var ref = new TestSafetensors(dir().resolve("reference.safetensors"));
        DeepseekV4Model model = load();
        List<int[]> seqs = rows(ref.get("input_ids"));
        float[] want = ref.get("logits").toFloatArray();
        int v = model.vocabSize();
        int t = seqs.get(0).length;
        // both sequences in one batch, fed as chunks of 5, 3, then single tokens: windows close mid-chunk
        KvCache[] caches = {model.newCache(4), model.newCache(4)};
        List<float[]> got = new ArrayList<>(List.of(new float[t * v], new float[t * v]));
        int at = 0;
        while (at < t) {
            int len = at < 8 ? (at == 0 ? 5 : 3) : 1;
            List<CausalLM.Segment> batch = new ArrayList<>();
            for (int b = 0; b < 2; b++) {
                int[] chunk = java.util.Arrays.copyOfRange(seqs.get(b), at, at + len);
                batch.add(new CausalLM.Segment(chunk, caches[b]));
            }
            float[] lg = model.forward(batch).toFloatArray();
            for (int b = 0; b < 2; b++) {
                System.arraycopy(lg, b * len * v, got.get(b), at * v, len * v);
            }
            at += len;
        }
        float[] all = new float[2 * t * v];
        System.arraycopy(got.get(0), 0, all, 0, t * v);
        System.arraycopy(got.get(1), 0, all, t * v, t * v);
        Qwen3FixtureTest.assertClose("deepseek_v4 logits through the cache", want, all, ATOL);
        assertEquals(t, caches[0].length());
    }

    /**
     * Past the fixture's window (8 tokens) and with more closed entries than the indexer keeps (its top 4 of up to 22),
     * a random sequence of 90 tokens fed one token at a time, and as a prefill of 40 then one at a time, gives the
     * one-shot forward's logits bit for bit: a query's choice depends on its own closed entries alone (ties among the
     * indexer's exact zeros included), not on how many entries the forward that computes it holds.
     */
    @Test
    void decodingPastTheWindowAndTheIndexersTopKEqualsTheOneShotForwardBitForBit() {
        DeepseekV4Model model = load();
        int v = model.vocabSize();
        int t = 90;
        int[] seq = new java.util.SplittableRandom(5).ints(t, 2, 256).toArray();
        float[] one = model.forward(List.of(new CausalLM.Segment(seq, null))).toFloatArray();
        for (int prefill : new int[]{1, 40}) {
            KvCache cache = model.newCache(t);
            float[] got = new float[t * v];
            for (int at = 0; at < t; ) {
                int len = at == 0 ? prefill : 1;
                float[] lg = model.forward(List.of(new CausalLM.Segment(java.util.Arrays.copyOfRange(seq, at, at + len),
                        cache))).toFloatArray();
                System.arraycopy(lg, 0, got, at * v, len * v);
                at += len;
            }
            for (int p = 0; p < t; p++) {
                assertArrayEquals(java.util.Arrays.copyOfRange(one, p * v, (p + 1) * v),
                        java.util.Arrays.copyOfRange(got, p * v, (p + 1) * v),
                        "deepseek_v4 logits at position " + p + " through the cache (prefill " + prefill + ") against the one-shot forward");
            }
        }
    }

    @Test
    void greedyDecodingThroughTheCacheReproducesTransformers() {
        var ref = new TestSafetensors(dir().resolve("reference.safetensors"));
        DeepseekV4Model model = load();
        long[] prompt = ref.get("greedy.prompt").toLongArray();
        long[] expected = ref.get("greedy.sequence").toLongArray();
        long[] got = FixtureRuns.greedy(model, prompt, expected.length, model.newCache(4));
        assertArrayEquals(expected, got, "deepseek_v4 greedy sequence");
    }

    @Test
    void loadedModelServesDeepseekV4WithItsPeftAdapter() {
        var lora = new TestSafetensors(dir().resolve("reference_lora.safetensors"));
        var ref = new TestSafetensors(dir().resolve("reference.safetensors"));
        try (var lm = org.orbitrl.model.LoadedModel.load(dir(), Backends.cpu(), org.orbitrl.model.BaseFormat.BF16)) {
            assertEquals(DeepseekV4Model.class, lm.model().getClass());
            lm.loadAdapter(dir().resolve("adapter"));
            List<CausalLM.Segment> batch = new ArrayList<>();
            for (int[] r : rows(ref.get("input_ids"))) {
                batch.add(new CausalLM.Segment(r, lm.model().newCache(r.length)));
            }
            Qwen3FixtureTest.assertClose("deepseek_v4 lora logits via LoadedModel", lora.get("logits").toFloatArray(),
                    lm.model().forward(batch).toFloatArray(), ATOL);
        }
    }
}
