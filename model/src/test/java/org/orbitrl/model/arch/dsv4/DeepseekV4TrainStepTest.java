package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.StrictAllocator;
import org.orbitrl.model.StrictBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Forms of DeepSeek V4's training step that must give the same step.
 *
 * <p>Recompute (each layer run again in the backward on its own tape, only its input streams kept) against every layer
 * on the tape: the same logits and adapter gradients bit for bit, on the CPU backend and on strict device memory.
 *
 * <p>Values kept in device memory between operations ({@link Ops#deviceValues}) against every value copied
 * back to the host after each operation (the earlier form), on the V4 fixture with its PEFT adapter on a
 * {@link StrictBackend} (device memory that the host may touch only through the allocator, which counts the bytes
 * copied each way). Both forms compute the same step: logits within 1e-5 of each other's largest, every adapter
 * gradient within 1e-4 of its largest (the RMSNorms on the device sum in f32, the host's in double), for a seeded
 * random gradient of the logits; the device form copies at most half the bytes back to the host and up to the device.
 * (Both forms against transformers and PEFT: {@code StrictDeviceMemoryTest}, {@code DeepseekV4LoraFixtureTest}.)
 */
class DeepseekV4TrainStepTest {
    private StrictBackend strict;

    @BeforeEach
    void open() {
        strict = new StrictBackend();
    }

    @AfterEach
    void close() {
        Ops.deviceValues = true;
        strict.close();
    }

    private record Step(float[] logits, List<float[]> grads, long readBack, long uploaded) {
    }

    @Test
    void valuesKeptOnTheDeviceGiveTheSameStepWithFewerCopies() {
        Step kept = step(strict, true, false);
        Step copied = step(strict, false, false);
        assertClose("logits", copied.logits, kept.logits, 1e-5);
        assertEquals(copied.grads.size(), kept.grads.size());
        int nonZero = 0;
        for (int i = 0; i < kept.grads.size(); i++) {
            nonZero += java.util.Arrays.equals(kept.grads.get(i), new float[kept.grads.get(i).length]) ? 0 : 1;
            assertClose("adapter gradient " + i, copied.grads.get(i), kept.grads.get(i), 1e-4);
        }
        System.out.printf("deepseek_v4 fixture step on strict device memory: read back %d / %d bytes, uploaded %d / %d "
                + "(values kept on the device / copied back after each operation)%n", kept.readBack, copied.readBack,
                kept.uploaded, copied.uploaded);
        assertTrue(nonZero >= kept.grads.size() / 2, nonZero + " of " + kept.grads.size() + " adapter gradients non-zero");
        assertTrue(kept.readBack * 2 <= copied.readBack, "bytes read back: " + kept.readBack + " kept on the device, "
                + copied.readBack + " copied back after each operation");
        assertTrue(kept.uploaded * 2 <= copied.uploaded, "bytes uploaded: " + kept.uploaded + " kept on the device, "
                + copied.uploaded + " copied back after each operation");
    }

    @Test
    void recomputeGivesTheSameStepBitForBitOnTheCpu() {
        try (org.orbitrl.kernels.Backend cpu = org.orbitrl.kernels.Backends.cpu()) {
            assertSameBits(step(cpu, true, false), step(cpu, true, true));
        }
    }

    @Test
    void recomputeGivesTheSameStepBitForBitOnStrictDeviceMemory() {
        assertSameBits(step(strict, true, false), step(strict, true, true));
    }

    /**
     * On a backend that asks for the routed experts per pair at inference ({@link org.orbitrl.kernels.Backend#moePairs}),
     * a training step still runs them grouped in every forward, the untaped first forward of recompute included (whose
     * recomputed forward must give its bits): the same step bit for bit with and without recompute, no pair product run.
     */
    @Test
    void recomputeGivesTheSameStepBitForBitWhereTheBackendRunsExpertsPerPair() {
        java.util.concurrent.atomic.AtomicInteger pairProducts = new java.util.concurrent.atomic.AtomicInteger();
        try (org.orbitrl.kernels.Backend pairs = new org.orbitrl.kernels.cpu.ScalarBackend() {
            @Override
            public boolean moePairs(org.orbitrl.kernels.ExpertWeights experts) {
                return true;
            }

            @Override
            public void moeExpertMatmulPairs(Tensor x, int xDiv, org.orbitrl.kernels.ExpertWeights experts, Tensor ids, float scale,
                                             Tensor y, boolean accumulate) {
                pairProducts.incrementAndGet();
                super.moeExpertMatmulPairs(x, xDiv, experts, ids, scale, y, accumulate);
            }
        }) {
            assertSameBits(step(pairs, true, false), step(pairs, true, true));
        }
        assertEquals(0, pairProducts.get(), "pair products in a training step");
    }

    /** A tape takes one backward; a second one, or one after its release, is refused with the reason. */
    @Test
    void aTapeTakesOneBackward() {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        DeepseekV4Model model = DeepseekV4Model.load(ConfigLoader.load(dir),
                new TestSafetensors(dir.resolve("model.safetensors")), strict);
        for (boolean recompute : new boolean[]{false, true}) {
            List<int[]> seqs = List.of(new int[]{3, 1, 4, 1, 5, 9});
            Trainable.Tape tape = model.forwardTrain(seqs, recompute);
            Tensor logits = tape.logits();
            float[] d = new float[Math.toIntExact(logits.numel())];
            d[7] = 1f;
            Tensor dl = strict.allocator().uploadFloats(MemoryCategory.ACTIVATIONS, d, logits.shape());
            model.backward(tape, dl);
            IllegalStateException again = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
                    () -> model.backward(tape, dl));
            assertTrue(again.getMessage().contains("takes one backward"), again.getMessage());
            Trainable.Tape released = model.forwardTrain(seqs, recompute);
            released.release(strict.allocator());
            org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class, () -> model.backward(released, dl));
        }
    }

    /**
     * A taped forward released without a backward (an error between them, a forward run for its logits) gives back
     * every activation it made on the device, the positions its ropes read included.
     */
    @Test
    void aTapeReleasedWithoutABackwardGivesBackItsActivations() {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        DeepseekV4Model model = DeepseekV4Model.load(ConfigLoader.load(dir),
                new TestSafetensors(dir.resolve("model.safetensors")), strict);
        List<int[]> seqs = List.of(new java.util.SplittableRandom(3).ints(20, 2, model.vocabSize()).toArray());
        for (boolean recompute : new boolean[]{false, true}) {
            Trainable.Tape warm = model.forwardTrain(seqs, recompute);   // once-only uploads (constants) out of the way
            strict.allocator().release(warm.logits());
            warm.release(strict.allocator());
            long before = strict.allocator().liveBytes(MemoryCategory.ACTIVATIONS);
            Trainable.Tape tape = model.forwardTrain(seqs, recompute);
            strict.allocator().release(tape.logits());
            tape.release(strict.allocator());
            assertEquals(before, strict.allocator().liveBytes(MemoryCategory.ACTIVATIONS),
                    "activations left by a released tape" + (recompute ? " (recompute)" : ""));
        }
    }

    private static void assertSameBits(Step taped, Step recomputed) {
        org.junit.jupiter.api.Assertions.assertArrayEquals(taped.logits, recomputed.logits, "logits");
        assertEquals(taped.grads.size(), recomputed.grads.size());
        int nonZero = 0;
        for (int i = 0; i < taped.grads.size(); i++) {
            org.junit.jupiter.api.Assertions.assertArrayEquals(taped.grads.get(i), recomputed.grads.get(i),
                    "adapter gradient " + i);
            nonZero += java.util.Arrays.equals(taped.grads.get(i), new float[taped.grads.get(i).length]) ? 0 : 1;
        }
        assertTrue(nonZero >= taped.grads.size() / 2, nonZero + " of " + taped.grads.size() + " adapter gradients non-zero");
    }

    private Step step(org.orbitrl.kernels.Backend backend, boolean deviceValues, boolean recompute) {
        Ops.deviceValues = deviceValues;
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        DeepseekV4Model model = DeepseekV4Model.load(ConfigLoader.load(dir),
                new TestSafetensors(dir.resolve("model.safetensors")), backend);
        LoraAdapter adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, backend.allocator());
        SplittableRandom r = new SplittableRandom(17);
        List<int[]> seqs = List.of(r.ints(11, 0, model.vocabSize()).toArray(), r.ints(7, 0, model.vocabSize()).toArray());
        org.orbitrl.kernels.TensorAllocator a = backend.allocator();
        StrictAllocator counted = backend == strict ? strict.allocator() : null;
        long read0 = counted == null ? 0 : counted.hostReadBytes();
        long up0 = counted == null ? 0 : counted.uploadBytes();
        Trainable.Tape tape = model.forwardTrain(seqs, recompute);
        Tensor logits = tape.logits();
        float[] d = new float[Math.toIntExact(logits.numel())];
        for (int i = 0; i < d.length; i++) {
            d[i] = (float) r.nextGaussian() * 1e-2f;
        }
        model.backward(tape, a.uploadFloats(MemoryCategory.ACTIVATIONS, d, logits.shape()));
        long readBack = counted == null ? 0 : counted.hostReadBytes() - read0;
        long uploaded = counted == null ? 0 : counted.uploadBytes() - up0 - 4L * d.length;
        List<float[]> grads = new ArrayList<>();
        for (LoraAdapter.Param p : adapter.params()) {
            grads.add(a.toHost(p.grad()).toFloatArray());
        }
        return new Step(a.toHost(logits).toFloatArray(), grads, readBack, uploaded);
    }

    /** got within {@code relative} of expected's largest magnitude; both zero where expected is. */
    private static void assertClose(String what, float[] expected, float[] got, double relative) {
        assertEquals(expected.length, got.length, what + ": length");
        double scale = 0;
        double worst = 0;
        for (int i = 0; i < expected.length; i++) {
            scale = Math.max(scale, Math.abs(expected[i]));
            worst = Math.max(worst, Math.abs(expected[i] - got[i]));
        }
        if (scale == 0) {   // the indexer's adapters: the top-k passes no gradient
            assertEquals(0, worst, what + ": zero in one form only");
            return;
        }
        assertTrue(worst <= relative * scale, what + ": worst difference " + worst + " against the largest " + scale);
    }
}
