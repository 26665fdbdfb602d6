package org.orbitrl.model.adapter;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.lang.foreign.Arena;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Set;

/** Host allocators for the release-at-last-use tests of the models that train through {@code PreNormDecoder}. */
final class ReleaseTracking {
    private ReleaseTracking() {
    }

    /** Host memory whose release keeps the tensor as it is: the reference run. */
    static final class Keeping implements TensorAllocator {
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
     * Host memory whose release poisons (the test JVMs' orbit.poisonReleased), counts the whole tensors released and
     * the activations' bytes allocated and still live.
     */
    static final class Poisoning implements TensorAllocator {
        int released;
        long activations;   // bytes of activations allocated and not released (whole tensors)
        long allocated;     // bytes of activations allocated
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
}
