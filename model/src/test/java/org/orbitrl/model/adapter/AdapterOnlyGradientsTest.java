package org.orbitrl.model.adapter;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Qwen3Model;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The base never receives a gradient, shown through the memory accounting: every tensor is
 * recorded with its category when it is allocated. Gradient memory is exactly the adapter's size,
 * allocated once when the adapter is attached, and a whole forward + backward step allocates
 * nothing but activations and logits.
 */
class AdapterOnlyGradientsTest {

    record Allocation(MemoryCategory category, long[] shape) {
    }

    /** Records every allocation. */
    static final class Recording implements TensorAllocator {
        final List<Allocation> log = new ArrayList<>();

        @Override
        public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
            log.add(new Allocation(category, shape.clone()));
            return TensorAllocator.heap().allocate(category, dtype, shape);
        }

        Map<MemoryCategory, Long> bytesByCategory() {
            Map<MemoryCategory, Long> m = new EnumMap<>(MemoryCategory.class);
            for (Allocation a : log) {
                m.merge(a.category(), Arrays.stream(a.shape()).reduce(4, (x, y) -> x * y), Long::sum);
            }
            return m;
        }
    }

    @Test
    void aTrainingStepAllocatesGradientsForAdapterTensorsOnly() {
        for (String arch : List.of("qwen3", "qwen3_moe")) {
            Recording rec = new Recording();
            var dir = TestSafetensors.fixtures().resolve(arch);
            var weights = new TestSafetensors(dir.resolve("model.safetensors"));
            var model = Qwen3Model.load(Qwen3FixtureTest.config(arch), weights, new CpuBackend(Runtime.getRuntime().availableProcessors(), rec), Qwen3Model.LoadOptions.full());
            var cfg = AdapterConfig.read(dir.resolve("adapter"));
            var adapter = LoraAdapter.load(cfg, new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, rec);
            long adapterBytes = adapter.parameterCount() * 4;
            rec.log.clear();

            var setup = new LoraFixtureTest.Setup(model, adapter, new TestSafetensors(dir.resolve("reference_lora.safetensors")),
                    LoraFixtureTest.setup(arch).seqs());
            LoraFixtureTest.gradients(setup, false);
            Map<MemoryCategory, Long> bytes = rec.bytesByCategory();
            assertEquals(null, bytes.get(MemoryCategory.ADAPTER_GRADS),
                    arch + ": gradient buffers exist before the step and are never reallocated");

            Set<MemoryCategory> stepCategories = new HashSet<>();
            rec.log.forEach(a -> stepCategories.add(a.category()));
            assertEquals(Set.of(MemoryCategory.ACTIVATIONS, MemoryCategory.LOGITS), stepCategories,
                    arch + ": a training step allocates activations and logits only");
            // the adapter's own gradient memory equals its parameter memory
            Recording fresh = new Recording();
            LoraAdapter.load(cfg, new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, fresh);
            assertEquals(adapterBytes, fresh.bytesByCategory().get(MemoryCategory.ADAPTER_GRADS), arch + " gradient bytes");
            assertTrue(adapterBytes > 0);
        }
    }

    /**
     * An adapter made without gradient buffers (a rollout engine's slot) holds the same parameters and no gradient bytes,
     * and a backward pass through it is refused, naming why.
     */
    @Test
    void anAdapterWithoutGradientsHoldsNoneAndRefusesABackwardPass() {
        String arch = "qwen3_moe";
        var dir = TestSafetensors.fixtures().resolve(arch);
        Recording rec = new Recording();
        var model = Qwen3Model.load(Qwen3FixtureTest.config(arch), new TestSafetensors(dir.resolve("model.safetensors")),
                new CpuBackend(2, rec), Qwen3Model.LoadOptions.full());
        AdapterConfig lora = AdapterConfig.lora(4, 8, List.of("q_proj", "o_proj"),
                List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));
        AdapterConfig oft = AdapterConfig.oft(OftSettings.ofBlockSize(4), List.of("q_proj", "v_proj"));
        for (boolean isLora : List.of(true, false)) {
            Recording with = new Recording();
            Adapter trained = isLora ? LoraAdapter.create(lora, model, with, 5) : OftAdapter.create(oft, model, with);
            Recording without = new Recording();
            Adapter slot = isLora ? LoraAdapter.create(lora, model, without, 5, false) : OftAdapter.create(oft, model, without, false);
            String what = isLora ? "lora" : "oft";
            assertTrue(trained.trainable() && !slot.trainable(), what);
            assertTrue(with.bytesByCategory().get(MemoryCategory.ADAPTER_GRADS) > 0, what);
            assertEquals(null, without.bytesByCategory().get(MemoryCategory.ADAPTER_GRADS), what + ": no gradient bytes");
            assertEquals(with.bytesByCategory().get(MemoryCategory.ADAPTER_PARAMS),
                    without.bytesByCategory().get(MemoryCategory.ADAPTER_PARAMS), what + ": the same parameters");
            for (int p = 0; p < trained.params().size(); p++) {
                assertEquals(trained.params().get(p).name(), slot.params().get(p).name());
                assertTrue(Arrays.equals(trained.params().get(p).value().toFloatArray(), slot.params().get(p).value().toFloatArray()),
                        what + " " + trained.params().get(p).name() + ": the same seeded values");
            }
            slot.zeroGrad();   // nothing to zero: allowed
            IllegalStateException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
                    slot::peftGradients);
            assertTrue(e.getMessage().contains("without gradient buffers"), e.getMessage());
            // the last attached adapter's hooks are the slot's: a training step through them is refused
            var tape = model.forwardTrain(LoraFixtureTest.setup(arch).seqs(), false);
            float[] d = new float[Math.toIntExact(tape.logits().numel())];
            java.util.SplittableRandom rnd = new java.util.SplittableRandom(3);
            for (int i = 0; i < d.length; i++) {
                d[i] = (float) rnd.nextGaussian();
            }
            Tensor dLogits = Tensor.of(d, tape.logits().shape());
            IllegalStateException back = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class,
                    () -> model.backward(tape, dLogits));
            assertTrue(back.getMessage().contains("without gradient buffer"), back.getMessage());
        }
    }
}
