package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.PagedSequence;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A Qwen3-MoE decode step hands each layer's o_proj, residual add, post-attention norm and router to one backend call
 * ({@link Backend#projectAddNormRouterTopk}) where the backend takes it: the qwen3_moe fixture on the scalar host backend
 * with that call answered by the host's own steps (o_proj's product, {@link Backend#addRmsNorm}, the router's product,
 * softmax and top-k) gives the logits of the same backend declining it, bit for bit, over a prefill and three decode
 * steps; the call comes once a layer at each decode step and never in the prefill, with the attention's output [1, Hq*D],
 * the layer's own o_proj and router weights, and the layer's input as the residual.
 */
class ProjectedRouterDecodeTest {
    private record Call(Tensor attn, Tensor wo, Tensor router) {
    }

    @Test
    void aDecodeStepsOProjAddNormAndRouterInOneCallGiveTheSameLogits() {
        Backend declining = new ScalarBackend() {
            @Override
            public boolean moePairs(ExpertWeights experts) {
                return true;
            }
        };
        List<Call> calls = new ArrayList<>();
        Backend taking = new ScalarBackend() {
            @Override
            public boolean moePairs(ExpertWeights experts) {
                return true;
            }

            @Override
            public boolean projectAddNormRouterTopk(Tensor attn, Tensor wo, Tensor res, Tensor sum, Tensor normWeight, float eps,
                                                    Tensor normed, Tensor router, int k, boolean normalize, Tensor weights,
                                                    Tensor ids) {
                calls.add(new Call(attn, wo, router));
                TensorAllocator a = allocator();
                int n = res.size(0);
                Tensor delta = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, res.size(1));            // [N, hidden]
                matmul(attn, wo, delta);
                addRmsNorm(res, delta, sum, normWeight, eps, normed);
                a.release(delta);
                Tensor probs = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, router.size(0));        // [N, E]
                matmul(normed, router, probs);
                softmax(probs);
                Tensor chosen = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, k);                    // [N, k]
                moeTopk(probs, k, normalize, chosen, weights, ids);
                a.release(probs);
                a.release(chosen);
                return true;
            }
        };
        float[][] declined = decode(declining);
        int before = calls.size();
        Qwen3Model[] model = new Qwen3Model[1];
        float[][] taken = decode(taking, model);
        assertEquals(0, before, "no call from the declining backend's run");
        int layers = model[0].layers();
        assertEquals(3 * layers, calls.size(), "one call a layer at each of the three decode steps, none in the prefill");
        for (int i = 0; i < calls.size(); i++) {
            Call c = calls.get(i);
            Qwen3Layer layer = model[0].layer(i % layers);
            assertSame(layer.attention.plainO(), c.wo(), "call " + i + ": layer " + (i % layers) + "'s o_proj weight");
            assertEquals(List.of(1L, (long) layer.attention.o.in()), List.of((long) c.attn().size(0), (long) c.attn().size(1)),
                    "call " + i + ": the attention's output, o_proj's input");
            assertTrue(c.router().dtype() == DType.F32 || c.router().dtype() == DType.BF16, "call " + i + ": the router's weight");
        }
        for (int s = 0; s < declined.length; s++) {
            assertArrayEquals(declined[s], taken[s], "step " + s + ": logits with the call taken against declined");
        }
    }

    private static float[][] decode(Backend b) {
        return decode(b, new Qwen3Model[1]);
    }

    /** The prefill's last logits and three greedy decode steps' logits of the qwen3_moe fixture over a paged cache. */
    private static float[][] decode(Backend b, Qwen3Model[] out) {
        Qwen3Model m = Qwen3Model.load(Qwen3FixtureTest.config("qwen3_moe"),
                new TestSafetensors(TestSafetensors.fixtures().resolve("qwen3_moe/model.safetensors")), b, Qwen3Model.LoadOptions.full());
        out[0] = m;
        var g = m.cacheGeometry();
        BlockPool pool = new BlockPool(TensorAllocator.heap(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), 4, 16, false, DType.F32);
        PagedSequence seq = new PagedSequence(pool);
        float[][] logits = new float[4][];
        Tensor l = m.forward(List.of(new CausalLM.Segment(new int[]{5, 17, 3, 250}, seq)));
        for (int s = 0; s < 4; s++) {
            int rows = l.size(0);
            int v = l.size(1);
            float[] last = new float[v];
            for (int i = 0; i < v; i++) {
                last[i] = l.getFloat(rows - 1, i);
            }
            logits[s] = last;
            if (s == 3) {
                break;
            }
            int next = 0;
            for (int i = 1; i < v; i++) {
                next = last[i] > last[next] ? i : next;
            }
            l = m.forward(List.of(new CausalLM.Segment(new int[]{next}, seq)));
        }
        return logits;
    }
}
