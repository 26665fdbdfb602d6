package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.PagedSequence;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A Qwen3-MoE decode step's asks of the device's cache ({@link Backend#prefetchFrozen}): during layer i, right before its
 * router, the frozen q, k and v weights of layer i + 1 (the very tensors those products read), and after the last layer
 * none (an empty ask, which clears what no launch carried); a forward that is not a decode step over paged caches asks
 * nothing. Recorded on the scalar host backend over the qwen3_moe fixture, with the per-pair MoE form a device takes.
 */
class DecodeAsksAheadTest {
    @Test
    void aDecodeStepAsksForTheNextLayersQkvRightBeforeEachRouter() {
        List<Object> calls = new ArrayList<>();   // Tensor[] asks and "router" in the order the backend saw them
        Backend b = new ScalarBackend() {
            @Override
            public boolean moePairs(ExpertWeights experts) {
                return true;
            }

            @Override
            public void prefetchFrozen(Tensor... frozen) {
                calls.add(frozen.clone());
            }

            @Override
            public boolean moeRouterTopk(Tensor x, Tensor router, int k, boolean normalize, Tensor weights, Tensor ids) {
                calls.add("router");
                return super.moeRouterTopk(x, router, k, normalize, weights, ids);
            }

            @Override
            public boolean addRmsNormRouterTopk(Tensor a, Tensor d, Tensor sum, Tensor normWeight, float eps, Tensor normed,
                                                Tensor router, int k, boolean normalize, Tensor weights, Tensor ids) {
                calls.add("add, norm and router");
                return super.addRmsNormRouterTopk(a, d, sum, normWeight, eps, normed, router, k, normalize, weights, ids);
            }
        };
        Qwen3Model m = Qwen3Model.load(Qwen3FixtureTest.config("qwen3_moe"),
                new TestSafetensors(TestSafetensors.fixtures().resolve("qwen3_moe/model.safetensors")), b, Qwen3Model.LoadOptions.full());
        int layers = m.layers();
        assertTrue(layers >= 2, "the fixture has a next layer to ask for: " + layers);
        var g = m.cacheGeometry();
        BlockPool pool = new BlockPool(TensorAllocator.heap(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), 4, 16, false, DType.F32);
        PagedSequence seq = new PagedSequence(pool);

        m.forward(List.of(new CausalLM.Segment(new int[]{5, 17, 3}, seq)));   // the prefill: not a decode step
        m.forward(List.of(new CausalLM.Segment(new int[]{5, 17}, null)));      // no cache
        assertEquals(List.of(), calls.stream().filter(c -> c instanceof Tensor[]).toList(), "asks outside a decode step");

        for (int step = 0; step < 2; step++) {
            calls.clear();
            m.forward(List.of(new CausalLM.Segment(new int[]{42 + step}, seq)));
            // a layer: its ask, then the backend's fused add-norm-router form (the host declines it), then the router
            List<String> names = calls.stream().map(c -> c instanceof Tensor[] t ? "ask of " + t.length : (String) c).toList();
            assertEquals(3 * layers, calls.size(), "step " + step + ": three calls a layer: " + names);
            for (int i = 0; i < layers; i++) {
                Object ask = calls.get(3 * i);
                assertTrue(ask instanceof Tensor[], "step " + step + ", layer " + i + ": an ask first: " + names);
                assertEquals(List.of("add, norm and router", "router"), calls.subList(3 * i + 1, 3 * i + 3),
                        "step " + step + ", layer " + i + ": then the router: " + names);
                Tensor[] got = (Tensor[]) ask;
                if (i + 1 == layers) {
                    assertEquals(0, got.length, "after the last layer an empty ask");
                    continue;
                }
                Qwen3Attention next = m.layer(i + 1).attention;
                Tensor[] want = {dense(next.q), dense(next.k), dense(next.v)};
                assertEquals(3, got.length, "layer " + i + ": q, k and v of layer " + (i + 1));
                for (int j = 0; j < 3; j++) {
                    assertSame(want[j], got[j], "layer " + i + ": ask " + j + " is layer " + (i + 1) + "'s weight");
                }
            }
        }
    }

    private static Tensor dense(org.orbitrl.model.nn.Linear l) {
        return ((org.orbitrl.model.nn.Weight.Dense) l.weight()).w();
    }
}
