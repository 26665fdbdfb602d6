package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;

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

    public DenseMlp(Linear gate, Linear up, Linear down) {
        this.gate = gate;
        this.up = up;
        this.down = down;
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
        Tensor g = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, gate.out()); // [N, I]
        Tensor u = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, up.out());   // [N, I]
        gate.forwardWith(dense == null ? gate.weight() : dense[0], b, x, g);
        up.forwardWith(dense == null ? up.weight() : dense[1], b, x, u);
        Tensor act = tape == null ? g : a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, gate.out());
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
