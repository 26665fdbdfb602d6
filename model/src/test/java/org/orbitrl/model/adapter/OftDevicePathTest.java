package org.orbitrl.model.adapter;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Qwen3Model;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * OFT's device path (what runs when the parameters come from a device allocator: the rotation
 * blocks, the coft projection and the Cayley derivative as backend ops, the rotation of the
 * activations by the rotation op, dL/dR by gather and per-block products),
 * exercised on the CPU backend with an allocator that declares its memory not host-readable: on the
 * PEFT fixtures (qwen3 and qwen3_moe; exact Cayley, Cayley-Neumann, shared block with coft) the
 * logits match {@code reference_oft} within 1e-4 absolute, and every gradient matches PEFT's within
 * 1e-3 relative and the host path's within 1e-5 relative (‖ours − ref‖ / ‖ref‖).
 */
class OftDevicePathTest {

    /** Heap memory that the adapter code must treat as device memory (copies only through this allocator). */
    static final TensorAllocator NOT_HOST = new TensorAllocator() {
        @Override
        public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
            return TensorAllocator.heap().allocate(category, dtype, shape);
        }

        @Override
        public boolean hostMemory() {
            return false;
        }
    };

    static Stream<Arguments> cases() {
        return OftFixtureTest.cases();
    }

    private static double relativeError(float[] got, float[] ref) {
        double diff = 0;
        double norm = 0;
        for (int i = 0; i < ref.length; i++) {
            diff += (got[i] - ref[i]) * (double) (got[i] - ref[i]);
            norm += ref[i] * (double) ref[i];
        }
        assertTrue(norm > 0, "reference is zero");
        return Math.sqrt(diff / norm);
    }

    @ParameterizedTest
    @MethodSource("cases")
    void devicePathMatchesPeftAndTheHostPath(String arch, String variant) {
        Map<String, float[]> hostGrads = OftFixtureTest.gradients(OftFixtureTest.setup(arch, variant), false);
        Path dir = OftFixtureTest.root().resolve(arch).resolve(variant);
        Qwen3Model model = OftFixtureTest.model(arch);
        OftAdapter adapter = OftAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, NOT_HOST);
        TestSafetensors ref = new TestSafetensors(dir.resolve("reference_oft.safetensors"));
        TestSafetensors base = new TestSafetensors(TestSafetensors.fixtures().resolve(arch).resolve("reference.safetensors"));
        var seqs = FixtureLoss.sequences(base);

        var tape = model.forwardTrain(seqs, false);
        Qwen3FixtureTest.assertClose(arch + "/" + variant + " OFT logits, device path", ref.get("logits").toFloatArray(),
                tape.logits().toFloatArray(), 1e-4f);
        adapter.zeroGrad();
        model.backward(tape, FixtureLoss.dLogits(tape.logits(), ref, seqs));
        Map<String, float[]> grads = new LinkedHashMap<>();
        adapter.peftGradients().forEach((k, g) -> grads.put(k, g.toFloatArray()));
        assertEquals(hostGrads.keySet(), grads.keySet());
        for (var e : grads.entrySet()) {
            String refName = "grad." + e.getKey().replace(".oft_R.weight", ".oft_R.default.weight");
            double rp = relativeError(e.getValue(), ref.get(refName).toFloatArray());
            double rh = relativeError(e.getValue(), hostGrads.get(e.getKey()));
            assertTrue(rp < 1e-3, refName + " device path vs peft: relative error " + rp + " (limit 1e-3)");
            assertTrue(rh < 1e-5, e.getKey() + " device path vs host path: relative error " + rh + " (limit 1e-5)");
        }
    }
}
