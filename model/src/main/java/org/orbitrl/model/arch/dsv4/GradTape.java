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
    }

    int size() {
        return steps.size();
    }
}
