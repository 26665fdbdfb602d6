package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.nn.Linear;

/** SwiGLU MLP: {@code down(silu(gate(x)) · up(x))}. Also one routed or shared expert. */
public final class DenseMlp {
    final Linear gate;
    final Linear up;
    final Linear down;

    public DenseMlp(Linear gate, Linear up, Linear down) {
        this.gate = gate;
        this.up = up;
        this.down = down;
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
        int n = x.size(0);
        Tensor g = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, gate.out()); // [N, I]
        Tensor u = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, up.out());   // [N, I]
        gate.forward(b, x, g);
        up.forward(b, x, u);
        b.swiglu(g, u, g);
        down.forward(b, g, out);
    }
}
