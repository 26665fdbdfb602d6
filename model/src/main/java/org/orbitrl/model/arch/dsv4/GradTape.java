package org.orbitrl.model.arch.dsv4;

import java.util.ArrayList;
import java.util.List;

/**
 * The backward steps of one training forward, replayed in reverse. A step runs only when its
 * output received a gradient, so branches that do not reach the loss (the lightning indexer's
 * discrete top-k) cost nothing and leave their adapters' gradients untouched.
 */
final class GradTape {
    private record Step(Node out, Runnable backward) {
    }

    private final List<Step> steps = new ArrayList<>();
    private final java.util.Map<int[], org.orbitrl.kernels.Tensor> positions = new java.util.IdentityHashMap<>();
    private org.orbitrl.kernels.TensorAllocator positionsIn;

    void record(Node out, Runnable backward) {
        steps.add(new Step(out, backward));
    }

    /** Runs every recorded step whose output has a gradient, newest first. */
    void backward() {
        for (int i = steps.size() - 1; i >= 0; i--) {
            Step s = steps.get(i);
            if (s.out().hasGrad()) {
                s.backward().run();
                s.out().dropGrad();   // its senders have all run: nothing reads it again
            }
        }
    }

    /**
     * Releases to {@code a} the values and gradients its steps' outputs hold there (once no backward through it is to
     * come), and forgets the steps.
     */
    void release(org.orbitrl.kernels.TensorAllocator a) {
        for (Step s : steps) {
            s.out().release(a);
        }
        steps.clear();
        if (positionsIn != null) {
            positions.values().forEach(positionsIn::release);
            positions.clear();
            positionsIn = null;
        }
    }

    /**
     * A forward's positions in {@code b}'s memory for its taped ropes and their backward: uploaded once for the tape
     * (every rope of the forward reads the same array), released with it ({@link #release}), whether or not a backward
     * ran.
     */
    org.orbitrl.kernels.Tensor positions(org.orbitrl.kernels.Backend b, int[] p) {
        org.orbitrl.kernels.TensorAllocator a = b.allocator();
        if (positionsIn != null && positionsIn != a) {
            throw new IllegalStateException("a tape's positions in two memories");
        }
        positionsIn = a;
        return positions.computeIfAbsent(p, k -> a.upload(org.orbitrl.kernels.MemoryCategory.ACTIVATIONS,
                org.orbitrl.kernels.Tensor.ofInts(k, k.length)));
    }

    int size() {
        return steps.size();
    }
}
