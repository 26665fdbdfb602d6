package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.spec.ConfigLoader;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4's MoE block in an inference forward with its routed experts per (token, expert) pair (the form a device
 * backend asks for through {@link Backend#moePairs}, the choice made by {@link Backend#moeScoreTopk} and read by the pair
 * products from backend memory): prefill and decode through the cache give transformers' logits within the fixture's
 * 1e-4 ({@link DeepseekV4FixtureTest#ATOL}), with and without its PEFT adapter, on the hash layers and the scored ones
 * alike; with MXFP4 experts the pair form gives the grouped form's logits within 1e-5 + 1e-4·|ref| (the pairs' sums
 * weighted in another order). Each run checks that the pair products ran.
 */
class DeepseekV4PairsTest {
    /** The scalar host backend asking for the per-pair experts when {@code pairs}; counts the pair products. */
    private static final class PairsBackend extends ScalarBackend {
        final boolean pairs;
        final AtomicInteger products = new AtomicInteger();

        PairsBackend(boolean pairs) {
            this.pairs = pairs;
        }

        @Override
        public boolean moePairs(ExpertWeights experts) {
            return pairs;
        }

        @Override
        public void moeExpertMatmulPairs(Tensor x, int xDiv, ExpertWeights experts, Tensor ids, float scale, Tensor y,
                                         boolean accumulate) {
            products.incrementAndGet();
            super.moeExpertMatmulPairs(x, xDiv, experts, ids, scale, y, accumulate);
        }
    }

    /** Both fixture sequences fed as chunks of 5, 3, then one token a step through their caches: the logits [2, T, V]. */
    private static float[] throughTheCache(CausalLM model, List<int[]> seqs) {
        int v = model.vocabSize();
        int t = seqs.get(0).length;
        KvCache[] caches = {model.newCache(4), model.newCache(4)};
        float[] all = new float[2 * t * v];
        for (int at = 0; at < t; ) {
            int len = at < 8 ? (at == 0 ? 5 : 3) : 1;
            List<CausalLM.Segment> batch = new ArrayList<>();
            for (int b = 0; b < 2; b++) {
                batch.add(new CausalLM.Segment(java.util.Arrays.copyOfRange(seqs.get(b), at, at + len), caches[b]));
            }
            float[] lg = model.forward(batch).toFloatArray();
            for (int b = 0; b < 2; b++) {
                System.arraycopy(lg, b * len * v, all, (b * t + at) * v, len * v);
            }
            at += len;
        }
        return all;
    }

    @Test
    void pairExpertsThroughTheCacheGiveTransformersLogitsWithAndWithoutTheAdapter() {
        var ref = new TestSafetensors(DeepseekV4FixtureTest.dir().resolve("reference.safetensors"));
        var lora = new TestSafetensors(DeepseekV4FixtureTest.dir().resolve("reference_lora.safetensors"));
        List<int[]> seqs = DeepseekV4FixtureTest.rows(ref.get("input_ids"));
        for (boolean adapter : new boolean[]{false, true}) {
            PairsBackend b = new PairsBackend(true);
            try (LoadedModel lm = LoadedModel.load(DeepseekV4FixtureTest.dir(), b, BaseFormat.BF16)) {
                if (adapter) {
                    lm.loadAdapter(DeepseekV4FixtureTest.dir().resolve("adapter"));
                }
                float[] got = throughTheCache(lm.model(), seqs);
                Qwen3FixtureTest.assertClose("deepseek_v4 logits, experts per pair" + (adapter ? ", with the adapter" : ""),
                        (adapter ? lora : ref).get("logits").toFloatArray(), got, DeepseekV4FixtureTest.ATOL);
                assertTrue(b.products.get() > 0, "the pair products ran");
            }
        }
    }

    @Test
    void mxfp4PairExpertsGiveTheGroupedFormsLogits() {
        var ref = new TestSafetensors(DeepseekV4FixtureTest.dir().resolve("reference.safetensors"));
        List<int[]> seqs = DeepseekV4FixtureTest.rows(ref.get("input_ids"));
        float[][] logits = new float[2][];
        int[] products = new int[2];
        for (boolean pairs : new boolean[]{false, true}) {
            PairsBackend b = new PairsBackend(pairs);
            DeepseekV4Model m = DeepseekV4Model.load(ConfigLoader.load(DeepseekV4FixtureTest.dir()),
                    new TestSafetensors(DeepseekV4FixtureTest.dir().resolve("model.safetensors")), b,
                    w -> Weight.of(QuantFormats.byName("mxfp4").quantize(w)));
            logits[pairs ? 1 : 0] = throughTheCache(m, seqs);
            products[pairs ? 1 : 0] = b.products.get();
        }
        assertEquals(0, products[0], "the grouped form runs no pair product");
        assertTrue(products[1] > 0, "the pair products ran");
        float[] want = logits[0];
        float[] got = logits[1];
        assertEquals(want.length, got.length);
        boolean differs = false;
        for (int i = 0; i < want.length; i++) {
            double tol = 1e-5 + 1e-4 * Math.abs(want[i]);
            assertTrue(Math.abs(got[i] - want[i]) <= tol, "logit " + i + ": grouped " + want[i] + ", per pair " + got[i]);
            differs |= want[i] != want[0];
        }
        assertTrue(differs, "the logits vary");
    }
}
