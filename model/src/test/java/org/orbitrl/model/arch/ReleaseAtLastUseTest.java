package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.model.ReleaseTracking;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.adapter.LoraFixtureTest;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The model releases its temporaries and per-layer tapes at their last use: a training step (forward
 * with and without recompute, the fixture's policy-gradient loss, backward into the LoRA gradients)
 * and a prefill give bit for bit the same logits and gradients whether released tensors are poisoned
 * (NaN, the test JVMs' {@code orbit.poisonReleased}) or kept, on the qwen3 and qwen3_moe fixtures,
 * the MoE block grouped and per expert. A use after release would change them to NaN.
 */
class ReleaseAtLastUseTest {

    record Step(float[] prefill, float[] trainLogits, Map<String, float[]> grads) {
    }

    private static Step step(String arch, boolean grouped, boolean recompute, TensorAllocator mem) {
        Path dir = TestSafetensors.fixtures().resolve(arch);
        var fixture = LoraFixtureTest.setup(arch);
        try (CpuBackend cpu = new CpuBackend(2, mem)) {
            Qwen3Model m = Qwen3Model.load(Qwen3FixtureTest.config(arch), new TestSafetensors(dir.resolve("model.safetensors")),
                    cpu, Qwen3Model.LoadOptions.full());
            m.setGroupedExperts(grouped);
            var adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                    new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), m, TensorAllocator.heap());
            var s = new LoraFixtureTest.Setup(m, adapter, fixture.ref(), fixture.seqs());
            List<CausalLM.Segment> batch = new ArrayList<>();
            for (int[] seq : s.seqs()) {
                batch.add(new CausalLM.Segment(seq, null));
            }
            float[] prefill = m.forward(batch, null).toFloatArray();
            float[] trainLogits = m.forwardTrain(s.seqs(), recompute).logits().toFloatArray();
            return new Step(prefill, trainLogits, LoraFixtureTest.gradients(s, recompute));
        }
    }

    @Test
    void trainingStepAndPrefillAreUnchangedByReleases() {
        assertTrue(TensorAllocator.poisonReleased(), "released host tensors must be poisoned in the test JVM");
        record Case(String arch, boolean grouped, boolean recompute) {
        }
        for (Case c : List.of(new Case("qwen3_moe", true, false), new Case("qwen3_moe", true, true),
                new Case("qwen3_moe", false, true), new Case("qwen3", false, true), new Case("qwen3", false, false))) {
            String what = c.arch() + (c.grouped() ? " grouped" : "") + (c.recompute() ? " recompute" : "");
            Step want = step(c.arch(), c.grouped(), c.recompute(), new ReleaseTracking.Keeping());
            ReleaseTracking.Poisoning p = new ReleaseTracking.Poisoning();
            Step got = step(c.arch(), c.grouped(), c.recompute(), p);
            int layers = Qwen3FixtureTest.config(c.arch()).layers();
            assertTrue(p.released > 10 * layers, what + ": only " + p.released + " tensors released over " + layers + " layers");
            assertBitEqual(what + " prefill logits", want.prefill(), got.prefill());
            assertBitEqual(what + " training logits", want.trainLogits(), got.trainLogits());
            assertEquals(want.grads().keySet(), got.grads().keySet(), what + " gradient names");
            double norm = 0;
            for (var e : want.grads().entrySet()) {
                assertBitEqual(what + " " + e.getKey(), e.getValue(), got.grads().get(e.getKey()));
                for (float v : e.getValue()) {
                    norm += Math.abs(v);
                }
            }
            assertTrue(norm > 0, what + ": the reference gradients are all zero");
            System.out.printf("%s: %d tensors (%d bytes) released, logits and %d gradients bit for bit%n",
                    what, p.released, p.releasedBytes, want.grads().size());
        }
    }

    private static void assertBitEqual(String what, float[] want, float[] got) {
        assertEquals(want.length, got.length, what + " length");
        for (int i = 0; i < want.length; i++) {
            if (Float.floatToRawIntBits(want[i]) != Float.floatToRawIntBits(got[i])) {
                fail(what + ": first difference at [" + i + "]: " + got[i] + " with releases, " + want[i] + " without");
            }
            if (Float.isNaN(want[i])) {
                fail(what + ": reference is NaN at [" + i + "]");
            }
        }
    }
}
