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
}
