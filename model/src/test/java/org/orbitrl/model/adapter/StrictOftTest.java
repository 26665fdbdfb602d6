package org.orbitrl.model.adapter;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.StrictBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Qwen3Model;

import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * OFT with its parameters in device memory, on a {@link StrictBackend} (a host read of a device
 * tensor outside the allocator, or a host operand handed to an op, fails): for the qwen3 PEFT
 * fixtures (exact Cayley, Cayley-Neumann, shared block with coft) a forward and backward take
 * exactly as many host reads through the allocator as the same step with the adapter disabled (the
 * OFT forward and backward read nothing back), the logits are within 1e-4 absolute of
 * {@code reference_oft} and every gradient within 1e-3 relative (‖ours − ref‖ / ‖ref‖) of PEFT's.
 */
class StrictOftTest {
    private StrictBackend strict;

    @BeforeEach
    void open() {
        strict = new StrictBackend();
    }

    @AfterEach
    void close() {
        strict.close();
    }

    @ParameterizedTest
    @ValueSource(strings = {"cayley", "neumann", "share_coft"})
    void oftStepReadsNothingBackAndMatchesPeft(String variant) {
        String arch = "qwen3";
        Path dir = OftFixtureTest.root().resolve(arch).resolve(variant);
        Path base = TestSafetensors.fixtures().resolve(arch);
        Qwen3Model model = Qwen3Model.load(Qwen3FixtureTest.config(arch), new TestSafetensors(base.resolve("model.safetensors")),
                strict, Qwen3Model.LoadOptions.full());
        OftAdapter adapter = OftAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, strict.allocator());
        assertTrue(strict.allocator().owns(adapter.params().get(0).value()), "OFT parameters are device memory");
        TestSafetensors ref = new TestSafetensors(dir.resolve("reference_oft.safetensors"));
        List<int[]> seqs = FixtureLoss.sequences(new TestSafetensors(base.resolve("reference.safetensors")));

        adapter.setEnabled(false);
        int baseReads = stepReads(model, adapter, ref, seqs, null);
        adapter.setEnabled(true);
        Tensor[] logits = new Tensor[1];
        int oftReads = stepReads(model, adapter, ref, seqs, logits);
        assertEquals(baseReads, oftReads, "host reads of a training step with OFT vs without it");

        Qwen3FixtureTest.assertClose(arch + "/" + variant + " OFT logits on strict device memory",
                ref.get("logits").toFloatArray(), logits[0].toFloatArray(), 1e-4f);
        for (var e : adapter.peftGradients().entrySet()) {
            String refName = "grad." + e.getKey().replace(".oft_R.weight", ".oft_R.default.weight");
            float[] want = ref.get(refName).toFloatArray();
            float[] got = strict.allocator().toHost(e.getValue()).toFloatArray();
            double diff = 0;
            double norm = 0;
            for (int i = 0; i < want.length; i++) {
                diff += (got[i] - want[i]) * (double) (got[i] - want[i]);
                norm += want[i] * (double) want[i];
            }
            assertTrue(norm > 0, refName + " is zero");
            double rel = Math.sqrt(diff / norm);
            assertTrue(rel < 1e-3, refName + " on strict device memory vs peft: relative error " + rel + " (limit 1e-3)");
        }
    }

    /** Host reads through the allocator during one forward and one backward (the logits read between is not counted). */
    private int stepReads(Qwen3Model model, OftAdapter adapter, TestSafetensors ref, List<int[]> seqs, Tensor[] logitsOut) {
        int r0 = strict.allocator().hostReads();
        var tape = model.forwardTrain(seqs, false);
        int r1 = strict.allocator().hostReads();
        Tensor logits = strict.allocator().toHost(tape.logits());
        if (logitsOut != null) {
            logitsOut[0] = logits;
        }
        adapter.zeroGrad();
        Tensor dLogits = strict.allocator().upload(MemoryCategory.ACTIVATIONS, FixtureLoss.dLogits(logits, ref, seqs));
        int r2 = strict.allocator().hostReads();
        model.backward(tape, dLogits);
        return (r1 - r0) + (strict.allocator().hostReads() - r2);
    }
}
