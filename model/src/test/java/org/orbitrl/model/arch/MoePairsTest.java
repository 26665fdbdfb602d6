package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.nn.Weight;

import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The MoE block's per-pair forward ({@link GroupedMoe}'s decode form, taken when the backend asks for it through
 * {@link Backend#moePairs}) against its grouped forward, on the qwen3_moe fixture with its PEFT LoRA adapter on the
 * experts (bf16 and INT4 experts): the same logits within {@code 1e-5 + 1e-4·|ref|} (only the order of the weighted
 * sums over a token's experts differs). That it reads nothing on the host is checked end to end by the rollout's
 * captured decode steps ({@code DecodeGraphsTest}).
 */
class MoePairsTest {
    private static final Path DIR = TestSafetensors.fixtures().resolve("qwen3_moe");

    /** The scalar host backend, asking for the per-pair MoE forward when {@code pairs}. */
    private static Backend backend(boolean pairs) {
        return new ScalarBackend() {
            @Override
            public boolean moePairs(org.orbitrl.kernels.ExpertWeights experts) {
                return pairs;
            }
        };
    }

    private static Qwen3Model load(Backend b, boolean int4) {
        Qwen3Model m = Qwen3Model.load(Qwen3FixtureTest.config("qwen3_moe"), new TestSafetensors(DIR.resolve("model.safetensors")), b,
                int4 ? new Qwen3Model.LoadOptions(w -> Weight.of(QuantFormats.byName("int4-g32").quantize(w))) : Qwen3Model.LoadOptions.full());
        LoraAdapter.load(AdapterConfig.read(DIR.resolve("adapter")), new TestSafetensors(DIR.resolve("adapter/adapter_model.safetensors")),
                m, TensorAllocator.heap());
        return m;
    }

    @Test
    void pairForwardMatchesTheGroupedForwardWithExpertLora() {
        int[] tokens = {5, 17, 3, 42, 8};
        for (boolean int4 : new boolean[]{false, true}) {
            float[][] logits = new float[2][];
            for (boolean pairs : new boolean[]{false, true}) {
                Qwen3Model m = load(backend(pairs), int4);
                int k = m.config().topK();
                assertTrue((long) tokens.length * k <= GroupedExperts.PAIRS_MAX, "the prompt's pairs take the per-pair forward");
                logits[pairs ? 1 : 0] = m.forward(List.of(new CausalLM.Segment(tokens, null))).toFloatArray();
            }
            float[] want = logits[0];
            float[] got = logits[1];
            assertTrue(want.length == got.length && want.length > 0, "logits of both forwards");
            boolean differs = false;
            for (int i = 0; i < want.length; i++) {
                double tol = 1e-5 + 1e-4 * Math.abs(want[i]);
                assertTrue(Math.abs(got[i] - want[i]) <= tol, (int4 ? "int4" : "bf16") + " experts, logit " + i + ": grouped "
                        + want[i] + " per pair " + got[i]);
                differs |= want[i] != want[0];
            }
            assertTrue(differs, "the logits vary");
        }
    }

    /**
     * An inference layer adds its MoE block into the residual stream in place ({@link SparseMoe#forwardAdd}): the bits of
     * the block's output and an add, on the per-pair form (the pairs weighted straight into the stream) and the grouped
     * one (an output and an add), for f32 and INT4 experts with LoRA on every projection.
     */
    @Test
    void theBlockAddedInPlaceHasTheBitsOfItsOutputAndAnAdd() {
        java.util.SplittableRandom r = new java.util.SplittableRandom(31);
        for (boolean pairs : new boolean[]{false, true}) {
            for (boolean int4 : new boolean[]{false, true}) {
                int[] addedInPlace = new int[1];
                Backend b = new ScalarBackend() {
                    @Override
                    public boolean moePairs(org.orbitrl.kernels.ExpertWeights experts) {
                        return pairs;
                    }

                    @Override
                    public void moeCombinePairs(org.orbitrl.kernels.Tensor ys, org.orbitrl.kernels.Tensor weights,
                                                org.orbitrl.kernels.Tensor out, boolean accumulate) {
                        addedInPlace[0] += accumulate ? 1 : 0;
                        super.moeCombinePairs(ys, weights, out, accumulate);
                    }
                };
                GroupedMoeTest.Block bl = GroupedMoeTest.Block.random(17, int4, b);
                org.orbitrl.kernels.Tensor x = GroupedMoeTest.rand(r, -1f, 1f, 5, GroupedMoeTest.Block.H);
                float[] stream = GroupedMoeTest.rand(r, -1f, 1f, 5, GroupedMoeTest.Block.H).toFloatArray();
                org.orbitrl.kernels.Tensor delta = org.orbitrl.kernels.Tensor.of(new float[stream.length], 5, GroupedMoeTest.Block.H);
                bl.moe.forward(b, x, delta, null, false);
                org.orbitrl.kernels.Tensor want = org.orbitrl.kernels.Tensor.of(new float[stream.length], 5, GroupedMoeTest.Block.H);
                b.add(org.orbitrl.kernels.Tensor.of(stream, 5, GroupedMoeTest.Block.H), delta, want);
                org.orbitrl.kernels.Tensor got = org.orbitrl.kernels.Tensor.of(stream.clone(), 5, GroupedMoeTest.Block.H);
                bl.moe.forwardAdd(b, x, got);
                float[] w = want.toFloatArray();
                float[] g = got.toFloatArray();
                for (int i = 0; i < w.length; i++) {
                    org.junit.jupiter.api.Assertions.assertEquals(Float.floatToRawIntBits(w[i]), Float.floatToRawIntBits(g[i]),
                            (pairs ? "per pair" : "grouped") + (int4 ? ", int4" : ", f32") + " experts, element " + i + ": output and add "
                                    + w[i] + ", in place " + g[i]);
                }
                org.junit.jupiter.api.Assertions.assertNotEquals(stream[0], g[0], "the block added something");
                org.junit.jupiter.api.Assertions.assertEquals(pairs ? 1 : 0, addedInPlace[0], "pairs weighted straight into the stream");
            }
        }
    }

    /**
     * A training step never takes the per-pair form, even where the backend asks for it: under recompute its layers
     * first run without a tape and must compute what their recompute for backward computes (the grouped form). Counted
     * on the backend: an inference forward calls the pair products, a recomputing training forward and its backward
     * never do.
     */
    @Test
    void trainingForwardsKeepTheGroupedExperts() {
        int[] calls = new int[1];
        Backend counting = new ScalarBackend() {
            @Override
            public boolean moePairs(org.orbitrl.kernels.ExpertWeights experts) {
                return true;
            }

            @Override
            public void moeExpertMatmulPairs(org.orbitrl.kernels.Tensor x, int xDiv, org.orbitrl.kernels.ExpertWeights experts,
                                             org.orbitrl.kernels.Tensor ids, float scale, org.orbitrl.kernels.Tensor y, boolean accumulate) {
                calls[0]++;
                super.moeExpertMatmulPairs(x, xDiv, experts, ids, scale, y, accumulate);
            }
        };
        Qwen3Model m = load(counting, true);
        List<int[]> seqs = List.of(new int[]{5, 17, 3, 42}, new int[]{8, 1, 30});
        m.forward(List.of(new CausalLM.Segment(seqs.get(0), null)));
        assertTrue(calls[0] > 0, "an inference forward takes the pair products");
        calls[0] = 0;
        var tape = m.forwardTrain(seqs, true);
        float[] logits = tape.logits().toFloatArray();
        assertTrue(logits.length > 0 && Float.isFinite(logits[0]), "training logits");
        assertTrue(calls[0] == 0, "a recomputing training forward called the pair products " + calls[0] + " times");
    }
}
