package org.orbitrl.model.adapter;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Qwen3Model;

import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * OFT prepared ({@link OftAdapter#prepare}): the rotation blocks built once and kept give the
 * logits and the gradients (through PEFT's fixture loss) of the rotations rebuilt at every forward and
 * backward bit for bit, on the PEFT fixtures (qwen3 and
 * qwen3_moe; exact Cayley, Cayley-Neumann, shared block with coft), in host memory and through the
 * device path ({@link OftDevicePathTest#NOT_HOST}); both match PEFT's {@code reference_oft} logits
 * within 1e-4. After new values are written and the adapter is prepared again, its logits are those
 * of an adapter that rebuilds its rotations from the same new values, bit for bit, and differ from
 * the old ones.
 */
class OftPreparedTest {

    static Stream<Arguments> cases() {
        return OftFixtureTest.cases();
    }

    private static float[] logits(Qwen3Model model, TestSafetensors base) {
        return model.forwardTrain(FixtureLoss.sequences(base), false).logits().toFloatArray();
    }

    private static double[] toDouble(float[] f) {
        double[] d = new double[f.length];
        for (int i = 0; i < f.length; i++) {
            d[i] = f[i];
        }
        return d;
    }

    /** New seeded values for every parameter (a published version), within coft's radius scale. */
    private static void rewrite(OftAdapter a, TensorAllocator memory, long seed) {
        SplittableRandom rnd = new SplittableRandom(seed);
        for (OftAdapter.Param p : a.params()) {
            float[] v = memory.toHost(p.value()).toFloatArray();
            for (int i = 0; i < v.length; i++) {
                v[i] = v[i] * 0.5f + (float) rnd.nextDouble(-0.02, 0.02);
            }
            memory.copy(Tensor.of(v, p.value().shape()), p.value());
        }
    }

    @ParameterizedTest
    @MethodSource("cases")
    void keptRotationsGiveTheRebuiltLogitsAndGradientsBitForBit(String arch, String variant) {
        Path dir = OftFixtureTest.root().resolve(arch).resolve(variant);
        TestSafetensors ref = new TestSafetensors(dir.resolve("reference_oft.safetensors"));
        TestSafetensors base = new TestSafetensors(TestSafetensors.fixtures().resolve(arch).resolve("reference.safetensors"));
        AdapterConfig cfg = AdapterConfig.read(dir.resolve("adapter"));
        for (TensorAllocator memory : List.of(TensorAllocator.heap(), OftDevicePathTest.NOT_HOST)) {
            String what = arch + "/" + variant + (memory.hostMemory() ? " (host)" : " (device path)");
            Qwen3Model served = OftFixtureTest.model(arch);
            OftAdapter a = OftAdapter.load(cfg, new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), served, memory);
            Qwen3Model rebuilt = OftFixtureTest.model(arch);
            OftAdapter b = OftAdapter.load(cfg, new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), rebuilt, memory);

            a.prepare(served.backend());
            float[] fromServed = logits(served, base);
            float[] fromRebuilt = logits(rebuilt, base);
            // a training step's backward with the kept rotations: PEFT's gradients, bit for bit the rebuilt path's
            for (Qwen3Model m : List.of(served, rebuilt)) {
                var seqs = FixtureLoss.sequences(base);
                var tape = m.forwardTrain(seqs, false);
                m.backward(tape, FixtureLoss.dLogits(tape.logits(), ref, seqs));
            }
            for (String k : b.peftGradients().keySet()) {
                float[] ga = memory.toHost(a.peftGradients().get(k)).toFloatArray();
                float[] gb = memory.toHost(b.peftGradients().get(k)).toFloatArray();
                assertArrayEquals(gb, ga, 0f, what + ": gradient " + k + " with kept rotations vs rebuilt");
                assertTrue(java.util.Arrays.stream(toDouble(gb)).anyMatch(v -> v != 0), what + ": gradient " + k + " is not all zero");
            }
            Qwen3FixtureTest.assertClose(what + " served OFT logits vs PEFT", ref.get("logits").toFloatArray(), fromServed, 1e-4f);
            assertArrayEquals(fromRebuilt, fromServed, 0f, what + ": served rotations vs rebuilt per forward");

            rewrite(a, memory, 5);
            rewrite(b, memory, 5);
            a.prepare(served.backend());
            float[] newServed = logits(served, base);
            float[] newRebuilt = logits(rebuilt, base);
            assertArrayEquals(newRebuilt, newServed, 0f, what + ": prepared again after new values vs rebuilt per forward");
            double moved = 0;
            for (int i = 0; i < newServed.length; i++) {
                moved = Math.max(moved, Math.abs(newServed[i] - fromServed[i]));
            }
            assertTrue(moved > 1e-4, what + ": the new values change the logits (max change " + moved + ")");
        }
    }
}
