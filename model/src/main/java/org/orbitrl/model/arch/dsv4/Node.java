package org.orbitrl.model.arch.dsv4;

/**
 * One host-side value of the DeepSeek V4 computation (row-major f32) and, once backward has
 * reached it, its gradient. Shapes are given by the op that made it.
 */
final class Node {
    final float[] v;
    private float[] g;

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

    /** The gradient, or null if nothing flowed here. */
    float[] gradOrNull() {
        return g;
    }
}
