package org.orbitrl.model.arch.dsv4;

/**
 * One host-side value of the DeepSeek V4 computation (row-major f32) and, once backward has
 * reached it, its gradient. Shapes are given by the op that made it.
 */
final class Node {
    final float[] v;
    private float[] g;
    private org.orbitrl.kernels.Tensor placed;   // v in a backend's memory, made by the first linear that reads it
    private org.orbitrl.kernels.TensorAllocator placedIn;

    /**
     * {@code v} as an f32 tensor of {@code shape} in {@code allocator}'s memory: one copy for every linear that reads
     * this value (q_a and kv, both compressor projections, an expert's gate and up). Values are never written after
     * their node is made, so the copy stays right.
     */
    org.orbitrl.kernels.Tensor placed(org.orbitrl.kernels.TensorAllocator allocator, long... shape) {
        if (placed == null || placedIn != allocator || !java.util.Arrays.equals(placed.shape(), shape)) {
            placed = Ops.device(allocator, v, shape);
            placedIn = allocator;
        }
        return placed;
    }

    Node(float[] v) {
        this.v = v;
    }

    static Node zeros(int n) {
        return new Node(new float[n]);
    }

    int size() {
        return v.length;
    }

    /** True once some consumer has sent a gradient here. */
    boolean hasGrad() {
        return g != null;
    }

    /** The gradient, allocated (zero) on first use. */
    float[] grad() {
        if (g == null) {
            g = new float[v.length];
        }
        return g;
    }

    /** Takes {@code d} as the gradient where none has flowed here yet (its caller gives the array up); else false. */
    boolean adoptGrad(float[] d) {
        if (g != null || d.length != v.length) {
            return false;
        }
        g = d;
        return true;
    }

    /** The gradient, or null if nothing flowed here. */
    float[] gradOrNull() {
        return g;
    }
}
