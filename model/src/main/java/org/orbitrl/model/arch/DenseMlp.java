package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Placement;
import org.orbitrl.model.nn.Weight;

import java.util.function.IntPredicate;

/** SwiGLU MLP: {@code down(silu(gate(x)) · up(x))}. Also one routed or shared expert. */
public final class DenseMlp {
    final Linear gate;
    final Linear up;
    final Linear down;

    /** What backward needs: the input and the two projections before the activation. */
    static final class Tape {
        Tensor x;    // [N, hidden]
        Tensor g;    // [N, I] gate projection
        Tensor u;    // [N, I] up projection
        Tensor act;  // [N, I] silu(g)·u, the input of down

        /** Releases what forward allocated for backward (not x, the caller's input). */
        void release(TensorAllocator a) {
            for (Tensor t : new Tensor[]{g, u, act}) {
                if (t != null) {
                    a.release(t);
                }
            }
            g = u = act = null;
        }
    }

    /**
     * Releases a per-expert MoE block's tapes (each expert's and its gathered input rows, which the block allocated) and
     * its experts' unweighted outputs; either array may be null, as may its entries (experts without rows).
     */
    static void releaseExperts(TensorAllocator a, Tape[] tapes, Tensor[] outputs) {
        if (tapes != null) {
            for (Tape t : tapes) {
                if (t != null) {
                    t.release(a);
                    a.release(t.x);
                }
            }
        }
        if (outputs != null) {
            for (Tensor t : outputs) {
                if (t != null) {
                    a.release(t);
                }
            }
        }
    }

    public DenseMlp(Linear gate, Linear up, Linear down) {
        this.gate = gate;
        this.up = up;
        this.down = down;
    }

    /** A loader's base weight of one expert projection [out, in], as the checkpoint holds it. */
    interface ExpertWeightSource {
        Weight weight(String module, int out, int in);
    }

    /**
     * A layer's routed experts {@code <prefix><e>.gate_proj / up_proj / down_proj} (gate and up [inter, hidden], down
     * [hidden, inter]), each projection's experts placed together ({@link Placement#experts}: back to back on a device);
     * null for an expert {@code held} says another rank holds. With a {@code quantizer} (null: as stored), every
     * projection {@link Weight#quantizable} is quantized on load, the layer's projections spread over the common pool's
     * threads (each one's result does not depend on the thread; the checkpoint is read in order on this thread first).
     */
    static DenseMlp[] routedExperts(TensorAllocator place, String prefix, int experts, int inter, int hidden, IntPredicate held,
                                    ExpertWeightSource source, java.util.function.Function<Tensor, Weight> quantizer) {
        String[] projections = {"gate_proj", "up_proj", "down_proj"};
        Weight[][] w = new Weight[3][experts];   // [projection][expert]
        for (int e = 0; e < experts; e++) {
            if (held.test(e)) {
                for (int j = 0; j < 3; j++) {
                    w[j][e] = source.weight(prefix + e + "." + projections[j], j < 2 ? inter : hidden, j < 2 ? hidden : inter);
                }
            }
        }
        if (quantizer != null) {
            java.util.stream.IntStream.range(0, 3 * experts).parallel().forEach(i -> {
                Weight stored = w[i % 3][i / 3];
                Tensor full = stored == null ? null : Weight.quantizable(stored);
                if (full != null) {
                    w[i % 3][i / 3] = quantizer.apply(full);
                }
            });
        }
        for (int j = 0; j < 3; j++) {
            w[j] = Placement.experts(place, w[j]);
        }
        DenseMlp[] out = new DenseMlp[experts];
        for (int e = 0; e < experts; e++) {
            if (w[0][e] != null) {
                out[e] = new DenseMlp(new Linear(prefix + e + ".gate_proj", w[0][e], null),
                        new Linear(prefix + e + ".up_proj", w[1][e], null), new Linear(prefix + e + ".down_proj", w[2][e], null));
            }
        }
        return out;
    }

    /** The same frozen weights with fresh, adapter-free linear layers. */
    public DenseMlp view() {
        return new DenseMlp(gate.view(), up.view(), down.view());
    }

    public Linear gate() {
        return gate;
    }

    public Linear up() {
        return up;
    }

    public Linear down() {
        return down;
    }

    /** x [N, hidden] -> out [N, hidden]. */
    public void forward(Backend b, Tensor x, Tensor out) {
        forward(b, x, out, null);
    }

    void forward(Backend b, Tensor x, Tensor out, Tape tape) {
        forward(b, x, out, tape, null);
    }

    /**
     * With {@code dense} non-null, its three weights (gate, up, down; e.g. dequantized into a chunk
     * buffer) stand in for the layers' own.
     */
    void forward(Backend b, Tensor x, Tensor out, Tape tape, Weight[] dense) {
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        Tensor g = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, gate.out()); // [N, I]
        Tensor u = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, up.out());   // [N, I]
        gate.forwardWith(dense == null ? gate.weight() : dense[0], b, x, g);
        up.forwardWith(dense == null ? up.weight() : dense[1], b, x, u);
        Tensor act = tape == null ? g : a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, gate.out());
        b.swiglu(g, u, act);
        if (tape == null) {
            a.release(u);
        }
        down.forwardWith(dense == null ? down.weight() : dense[2], b, act, out);
        if (tape == null) {
            a.release(act);
        } else {
            tape.x = x;
            tape.g = g;
            tape.u = u;
            tape.act = act;
        }
    }

    /** dout [N, hidden] -> dx [N, hidden] (overwritten); adapters accumulate their gradients. */
    void backward(Backend b, Tape tape, Tensor dout, Tensor dx) {
        backward(b, tape, dout, dx, null);
    }

    void backward(Backend b, Tape tape, Tensor dout, Tensor dx, Weight[] dense) {
        TensorAllocator a = b.allocator();
        int n = dout.size(0);
        Tensor dact = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, gate.out()); // [N, I]
        down.backwardWith(dense == null ? down.weight() : dense[2], b, tape.act, dout, dact);
        Tensor dg = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, gate.out());   // [N, I]
        Tensor du = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, up.out());     // [N, I]
        b.swigluBackward(tape.g, tape.u, dact, dg, du);
        a.release(dact);
        gate.backwardWith(dense == null ? gate.weight() : dense[0], b, tape.x, dg, dx);
        a.release(dg);
        up.backwardAccumulateWith(dense == null ? up.weight() : dense[1], b, tape.x, du, dx);   // the grouped block's order
        a.release(du);
    }
}
