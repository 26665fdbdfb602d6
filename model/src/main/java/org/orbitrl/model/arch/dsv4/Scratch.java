package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.TensorAllocator;

import java.util.ArrayList;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Set;

/**
 * The values an untaped run makes (a layer run for its output alone: a forward for inference, or a layer of a training
 * forward under recompute), released to the allocator when it closes, except those it was told to keep. Without one,
 * such values would stay in device memory until the collector found them unreachable, where a tape's values are
 * released by the tape ({@link GradTape#release}). Every {@link Node} made on a thread while a scratch is open there
 * is registered with it; a taped run opens none.
 */
final class Scratch implements AutoCloseable {
    private static final ThreadLocal<Scratch> OPEN = new ThreadLocal<>();

    private final TensorAllocator allocator;
    private final Scratch outer;
    private final List<Node> made = new ArrayList<>();
    private final Set<Node> kept = Collections.newSetFromMap(new IdentityHashMap<>());

    private Scratch(TensorAllocator allocator, Scratch outer) {
        this.allocator = allocator;
        this.outer = outer;
    }

    /** Opens a scratch on this thread whose values go back to {@code allocator}. */
    static Scratch open(TensorAllocator allocator) {
        Scratch s = new Scratch(allocator, OPEN.get());
        OPEN.set(s);
        return s;
    }

    /** Registers {@code n} with the scratch open on this thread, if any (called as each node is made). */
    static void made(Node n) {
        Scratch s = OPEN.get();
        if (s != null) {
            s.made.add(n);
        }
    }

    /**
     * Makes a value that no open scratch takes: a sequence's decode state, which outlives the run that made it and is
     * released by the state that holds it ({@link DeepseekV4Attention.State#release}).
     */
    static Node unscoped(java.util.function.Supplier<Node> make) {
        Scratch open = OPEN.get();
        OPEN.set(null);
        try {
            return make.get();
        } finally {
            OPEN.set(open);
        }
    }

    /** Keeps {@code n} past the close (the run's result); returns it. */
    Node keep(Node n) {
        kept.add(n);
        return n;
    }

    /** Releases every value made while open except the kept ones, and reopens the scratch that was open before. */
    @Override
    public void close() {
        if (OPEN.get() != this) {
            throw new IllegalStateException("a DeepSeek V4 scratch closed out of order");
        }
        OPEN.set(outer);
        for (Node n : made) {
            if (!kept.contains(n)) {
                n.release(allocator);
            }
        }
        if (outer != null) {
            outer.made.addAll(kept);   // the result belongs to the enclosing run
        }
        made.clear();
    }
}
