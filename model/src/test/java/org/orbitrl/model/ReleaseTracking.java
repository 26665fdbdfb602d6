package org.orbitrl.model;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;

import java.lang.foreign.Arena;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.Set;
import java.util.function.BiFunction;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** Host allocators and a check for the release-at-last-use tests of the models. */
public final class ReleaseTracking {
    private ReleaseTracking() {
    }

    /** Host memory whose release keeps the tensor as it is: the reference run. */
    public static final class Keeping implements TensorAllocator {
        @Override
        public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
            return Tensor.allocate(Arena.ofAuto(), dtype, shape);
        }

        @Override
        public void release(Tensor t) {
            // kept: the collector frees it
        }
    }

    /**
     * Host memory whose release poisons (the test JVMs' {@code orbit.poisonReleased}), counts the whole tensors released
     * and their bytes, and the activations' bytes allocated and still live.
     */
    public static final class Poisoning implements TensorAllocator {
        public int released;
        public long releasedBytes;
        public long activations;   // bytes of activations allocated and not released (whole tensors)
        public long allocated;     // bytes of activations allocated
        private final Set<Tensor> live = Collections.newSetFromMap(new IdentityHashMap<>());

        @Override
        public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
            Tensor t = Tensor.allocate(Arena.ofAuto(), dtype, shape);
            if (category == MemoryCategory.ACTIVATIONS) {
                live.add(t);
                activations += t.byteSize();
                allocated += t.byteSize();
            }
            return t;
        }

        @Override
        public void release(Tensor t) {
            if (TensorAllocator.isWhole(t)) {
                released++;
                releasedBytes += t.byteSize();
                for (Tensor l : live) {
                    if (l.segment().address() == t.segment().address() && l.byteSize() == t.byteSize()) {
                        live.remove(l);
                        activations -= l.byteSize();
                        break;
                    }
                }
            }
            TensorAllocator.super.release(t);
        }
    }

    /**
     * A training step's gradients ({@code gradients(backend, recompute)}) with and without recompute are the same bits on a
     * backend whose releases poison as on one whose releases keep; after the step less than a tenth of the activations it
     * allocated are left; and, when {@code minReleased} is above 0, more tensors than that were released.
     */
    public static void assertReleasesChangeNoGradient(String model, BiFunction<Backend, Boolean, Map<String, float[]>> gradients,
                                                      int minReleased) {
        assertTrue(TensorAllocator.poisonReleased(), "released host tensors must be poisoned in the test JVM");
        for (boolean recompute : new boolean[]{false, true}) {
            Map<String, float[]> want;
            try (CpuBackend keep = new CpuBackend(2, new Keeping())) {
                want = gradients.apply(keep, recompute);
            }
            Poisoning poison = new Poisoning();
            Map<String, float[]> got;
            try (CpuBackend cpu = new CpuBackend(2, poison)) {
                got = gradients.apply(cpu, recompute);
            }
            String what = model + ", recompute " + recompute;
            System.out.println(what + ": " + poison.released + " tensors released, " + poison.activations
                    + " bytes of activations left of " + poison.allocated);
            if (minReleased > 0) {
                assertTrue(poison.released > minReleased, what + ": only " + poison.released + " tensors released");
            }
            assertTrue(poison.activations < poison.allocated / 10, what + ": " + poison.activations + " of " + poison.allocated
                    + " bytes of activations left after the step: tapes or temporaries were not released");
            assertEquals(want.keySet(), got.keySet());
            for (var e : want.entrySet()) {
                assertArrayEquals(e.getValue(), got.get(e.getKey()), 0f, e.getKey() + ", " + what + ": with releases poisoned against kept");
            }
        }
    }
}
