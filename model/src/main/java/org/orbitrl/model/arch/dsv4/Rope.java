package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * DeepSeek V4's rotary embedding as a differentiable op ({@link Ops}): interleaved pairs on the trailing channels of
 * each head, by the row's position (queries, keys, the attention output rotated back) or by given angles (the
 * compressors' entries, rotated at their windows' first positions).
 */
final class Rope {
    private Rope() {
    }

    /**
     * Interleaved rotary embedding on the trailing {@code rope.rotaryDim()} channels of each head of
     * x [rows, heads, headDim]: pairs (2i, 2i+1) rotate by the angle i of the row's position; {@code inverse} rotates
     * by the negative angle (the conjugate). On {@code b} where x is in its device memory ({@link Backend#rope} and
     * {@link Backend#ropeBackward} on the trailing channels' view), else here (b may be null).
     */
    static Node apply(GradTape t, Backend b, Node x, int heads, int headDim, RopeTable rope, int[] positions,
                     boolean inverse) {
        return apply(t, b, x, heads, headDim, rope, positions, inverse, false);
    }

    /**
     * As {@link #apply(GradTape, Backend, Node, int, int, RopeTable, int[], boolean)}; with {@code consume}, x is read
     * by nothing after this call, so an untaped run on the device rotates x's own tensor in place (taken from x, no copy).
     */
    static Node apply(GradTape t, Backend b, Node x, int heads, int headDim, RopeTable rope, int[] positions,
                      boolean inverse, boolean consume) {
        int rows = x.size() / (heads * headDim);
        int rot = rope.rotaryDim();
        for (int p : positions) {
            if (p >= rope.maxPositions()) {
                throw new IllegalArgumentException("position " + p + " is beyond max_position_embeddings " + rope.maxPositions());
            }
        }
        if (Ops.there(b, x)) {
            TensorAllocator a = b.allocator();
            // the run's (untaped) or the tape's positions, released with them; else this rope's own
            Tensor shared = t != null ? t.positions(b, positions) : Ops.runPositions(b, positions);
            Tensor pos = shared != null ? shared : a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(positions, rows));
            Tensor y = t == null && consume ? x.take(a, rows, heads, headDim) : null;
            if (y == null) {
                y = Ops.copy(b, x.placed(a, rows, heads, headDim));
            }
            turn(b, y.slice(2, headDim - rot, headDim), pos, rope, inverse);
            Node yn = Node.onDevice(a, y);
            if (t != null) {
                t.record(yn, () -> {
                    Tensor dx = Ops.copy(b, yn.gradPlaced(a, rows, heads, headDim));
                    turn(b, dx.slice(2, headDim - rot, headDim), pos, rope, !inverse);
                    x.accDevice(b, dx);
                });
            } else if (shared == null) {
                a.release(pos);
            }
            return yn;
        }
        float[][] cs = DeepseekV4Config.cosSin(rope, positions);
        float[] xv = x.v();
        float[] y = xv.clone();
        rotate(y, xv, heads, headDim, rot / 2, cs[0], cs[1], inverse);
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dx = dy.clone();
                rotate(dx, dy, heads, headDim, rot / 2, cs[0], cs[1], !inverse);
                Ops.acc(x, dx);
            });
        }
        return yn;
    }

    private static void turn(Backend b, Tensor view, Tensor positions, RopeTable rope, boolean inverse) {
        if (inverse) {
            b.ropeBackward(view, positions, rope);
        } else {
            b.rope(view, positions, rope);
        }
    }

    /**
     * As {@link #apply(GradTape, Backend, Node, int, int, RopeTable, int[], boolean)} on the host with each row's angles
     * given: cos/sin [rows, half] (the compressor's entries, rotated at their windows' first positions).
     */
    static Node apply(GradTape t, Node x, int heads, int headDim, float[] cos, float[] sin, boolean inverse) {
        int half = cos.length / (x.size() / (heads * headDim));
        float[] xv = x.v();
        float[] y = xv.clone();
        rotate(y, xv, heads, headDim, half, cos, sin, inverse);
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dx = dy.clone();
                rotate(dx, dy, heads, headDim, half, cos, sin, !inverse);
                Ops.acc(x, dx);
            });
        }
        return yn;
    }

    private static void rotate(float[] y, float[] x, int heads, int headDim, int half, float[] cos, float[] sin,
                               boolean inverse) {
        int rows = x.length / (heads * headDim);
        int start = headDim - 2 * half;
        Ops.forRows(rows, (long) heads * half, r -> {
            for (int h = 0; h < heads; h++) {
                int base = (r * heads + h) * headDim + start;
                for (int i = 0; i < half; i++) {
                    float c = cos[r * half + i];
                    float s = inverse ? -sin[r * half + i] : sin[r * half + i];
                    float a = x[base + 2 * i];
                    float bb = x[base + 2 * i + 1];
                    y[base + 2 * i] = a * c - bb * s;
                    y[base + 2 * i + 1] = bb * c + a * s;
                }
            }
        });
    }

}
