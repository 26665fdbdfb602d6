package org.orbitrl.model.arch.dsv4;

/**
 * Manifold-constrained hyper-connections around one attention or MoE block. The {@code hc}
 * residual streams [N, hc, H] are RMS-normalised (unweighted, over hc·H), projected by
 * {@code fn} [(2+hc)·hc, hc·H] into pre, post and comb mixes; pre = sigmoid(·)+eps collapses the
 * streams into the block input, post = 2·sigmoid(·) expands the block output back, and comb, a
 * row softmax (+eps) made doubly stochastic by Sinkhorn-Knopp iterations, mixes the residual
 * streams: {@code out_k = post_k · f + Σ_j comb[j,k] · in_j}.
 */
final class DeepseekV4HyperConnection {
    final float[] fn;     // [(2+hc)*hc, hc*hidden]
    final float[] base;   // [(2+hc)*hc]
    final float[] scale;  // [3]
    private final int hc;
    private final int hidden;
    private final int iters;
    private final float hcEps;
    private final float normEps;

    DeepseekV4HyperConnection(float[] fn, float[] base, float[] scale, int hc, int hidden, int iters, float hcEps,
                              float normEps) {
        this.fn = fn;
        this.base = base;
        this.scale = scale;
        this.hc = hc;
        this.hidden = hidden;
        this.iters = iters;
        this.hcEps = hcEps;
        this.normEps = normEps;
    }

    /** Floats of its weights: the mixer, its base and its three scales. */
    long floats() {
        return (long) fn.length + base.length + scale.length;
    }

    private int mixes() {
        return (2 + hc) * hc;
    }

    /** The mixing weights [N, (2+hc)·hc] (pre, post, comb row-major [j][k]) of streams [N, hc·H], on the host. */
    Node weights(GradTape t, Node streams) {
        return weights(t, null, streams);
    }

    /**
     * As {@link #weights(GradTape, Node)}; where {@code b} keeps values in device memory the streams go there (if not
     * already) and their norm and projection run there, the mixes [N, (2+hc)·hc] read back for the host's map.
     */
    Node weights(GradTape t, org.orbitrl.kernels.Backend b, Node streams) {
        int n = streams.size() / (hc * hidden);
        if (b != null && Ops.keepsValues(b)) {
            streams.placed(b.allocator(), n, (long) hc * hidden);
        }
        Node flat = Ops.rmsNorm(t, b, streams, hc * hidden, null, normEps);
        Node m = Ops.matmulT(t, b, flat, n, fn, mixes(), hc * hidden);
        return map(t, b, m, n);
    }

    private static float sigmoid(float x) {
        return 1f / (1f + (float) Math.exp(-x));
    }

    /**
     * The mixes [N, (2+hc)·hc] of the projections m: on {@code b} where m is in its device memory and it takes them
     * ({@link org.orbitrl.kernels.Backend#hyperConnectionMix}: no copy to the host, the mixes stay there for the collapse
     * and the expansion), else here. A taped map's backward runs here over the stages it makes again from m.
     */
    Node map(GradTape t, org.orbitrl.kernels.Backend b, Node m, int n) {
        int mm = mixes();
        if (b != null && Ops.keepsValues(b) && m.onDevice()) {
            org.orbitrl.kernels.TensorAllocator a = b.allocator();
            org.orbitrl.kernels.Tensor y = a.allocateUninitialized(org.orbitrl.kernels.MemoryCategory.ACTIVATIONS,
                    org.orbitrl.kernels.DType.F32, n, mm);
            if (b.hyperConnectionMix(m.placed(a, n, mm), Ops.constant(b, base, new long[]{mm}), scale[0], scale[1],
                    scale[2], hc, iters, hcEps, y)) {
                Node yn = Node.onDevice(a, y);
                if (t != null) {
                    t.record(yn, () -> backward(yn, m, n, stages(m.v(), n, new float[n * mm])));
                }
                return yn;
            }
            a.release(y);
        }
        float[] y = new float[n * mm];
        float[][] stages = stages(m.v(), n, y);
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> backward(yn, m, n, stages));
        }
        return yn;
    }

    /**
     * The mixes of mv [N, (2+hc)·hc] into y, and per token the comb's softmax probabilities and every Sinkhorn iterate
     * (2·iters−1 of them), which the backward reads.
     */
    private float[][] stages(float[] mv, int n, float[] y) {
        int mm = mixes();
        int cc = hc * hc;
        // per token: softmax probabilities, then every Sinkhorn iterate (2*iters-1 of them) for backward
        float[][] stages = new float[n][];
        Ops.forRows(n, (long) hc * hidden, r -> {
            int o = r * mm;
            for (int i = 0; i < hc; i++) {
                y[o + i] = sigmoid(mv[o + i] * scale[0] + base[i]) + hcEps;
                y[o + hc + i] = 2f * sigmoid(mv[o + hc + i] * scale[1] + base[hc + i]);
            }
            float[] st = new float[2 * iters * cc];
            for (int j = 0; j < hc; j++) {
                float max = Float.NEGATIVE_INFINITY;
                for (int k = 0; k < hc; k++) {
                    max = Math.max(max, mv[o + 2 * hc + j * hc + k] * scale[2] + base[2 * hc + j * hc + k]);
                }
                float sum = 0;
                for (int k = 0; k < hc; k++) {
                    float e = (float) Math.exp(mv[o + 2 * hc + j * hc + k] * scale[2] + base[2 * hc + j * hc + k] - max);
                    st[j * hc + k] = e;
                    sum += e;
                }
                for (int k = 0; k < hc; k++) {
                    st[j * hc + k] /= sum;
                }
            }
            // stage 0 = softmax p; stage s>=1 = after normalisation s (odd s: columns first, then alternating)
            float[] c = new float[cc];
            for (int i = 0; i < cc; i++) {
                c[i] = st[i] + hcEps;
            }
            for (int s = 1; s < 2 * iters; s++) {
                normalize(c, s % 2 == 1);
                System.arraycopy(c, 0, st, s * cc, cc);
            }
            System.arraycopy(c, 0, y, o + 2 * hc, cc);
            stages[r] = st;
        });
        return stages;
    }

    /** The map's backward: the mixes' gradient into m's, through the stages of the forward. */
    private void backward(Node yn, Node m, int n, float[][] stages) {
        int mm = mixes();
        int cc = hc * hc;
        float[] mv = m.v();
        float[] dy = yn.gradOrNull();
        float[] dm = m.grad();
        Ops.forRows(n, (long) hc * hidden, r -> {
            int o = r * mm;
            for (int i = 0; i < hc; i++) {
                float s0 = sigmoid(mv[o + i] * scale[0] + base[i]);
                dm[o + i] += dy[o + i] * s0 * (1 - s0) * scale[0];
                float s1 = sigmoid(mv[o + hc + i] * scale[1] + base[hc + i]);
                dm[o + hc + i] += dy[o + hc + i] * 2f * s1 * (1 - s1) * scale[1];
            }
            float[] st = stages[r];
            float[] dc = new float[cc];
            System.arraycopy(dy, o + 2 * hc, dc, 0, cc);
            for (int s = 2 * iters - 1; s >= 1; s--) {
                // input of normalisation s: stage s-1 (+eps for s == 1)
                float[] in = new float[cc];
                for (int i = 0; i < cc; i++) {
                    in[i] = st[(s - 1) * cc + i] + (s == 1 ? hcEps : 0);
                }
                dc = normalizeBackward(in, dc, s % 2 == 1);
            }
            for (int j = 0; j < hc; j++) {
                float dot = 0;
                for (int k = 0; k < hc; k++) {
                    dot += st[j * hc + k] * dc[j * hc + k];
                }
                for (int k = 0; k < hc; k++) {
                    dm[o + 2 * hc + j * hc + k] += st[j * hc + k] * (dc[j * hc + k] - dot) * scale[2];
                }
            }
        });
    }

    /** c[j][k] /= (Σ over the group + eps): columns (sum over j) or rows (sum over k). */
    private void normalize(float[] c, boolean columns) {
        for (int a = 0; a < hc; a++) {
            float s = 0;
            for (int b = 0; b < hc; b++) {
                s += c[columns ? b * hc + a : a * hc + b];
            }
            for (int b = 0; b < hc; b++) {
                c[columns ? b * hc + a : a * hc + b] /= s + hcEps;
            }
        }
    }

    private float[] normalizeBackward(float[] in, float[] dOut, boolean columns) {
        float[] dIn = new float[in.length];
        for (int a = 0; a < hc; a++) {
            float s = 0;
            float dot = 0;
            for (int b = 0; b < hc; b++) {
                int i = columns ? b * hc + a : a * hc + b;
                s += in[i];
                dot += dOut[i] * in[i];
            }
            float den = s + hcEps;
            for (int b = 0; b < hc; b++) {
                int i = columns ? b * hc + a : a * hc + b;
                dIn[i] = dOut[i] / den - dot / (den * den);
            }
        }
        return dIn;
    }

    /**
     * Block input [N, H] = Σ_j pre_j · stream_j, pre from columns [0, hc) of w [N, width]. On {@code b} where the
     * streams are in its device memory ({@link HyperConnectionOps#collapse}), else here (b may be null).
     */
    static Node collapse(GradTape t, org.orbitrl.kernels.Backend b, Node w, int width, Node streams, int hc, int hidden) {
        int n = streams.size() / (hc * hidden);
        if (b != null && Ops.keepsValues(b) && streams.onDevice()) {
            return HyperConnectionOps.collapse(t, b, w, width, streams, hc, hidden);
        }
        float[] wv = w.v();
        float[] sv = streams.v();
        float[] y = new float[n * hidden];
        Ops.forRows(n, (long) hc * hidden, r -> {
            for (int j = 0; j < hc; j++) {
                float p = wv[r * width + j];
                for (int c = 0; c < hidden; c++) {
                    y[r * hidden + c] += p * sv[(r * hc + j) * hidden + c];
                }
            }
        });
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dw = w.grad();
                float[] ds = streams.grad();
                Ops.forRows(n, (long) hc * hidden, r -> {
                    for (int j = 0; j < hc; j++) {
                        float p = wv[r * width + j];
                        float dot = 0;
                        for (int c = 0; c < hidden; c++) {
                            int si = (r * hc + j) * hidden + c;
                            dot += dy[r * hidden + c] * sv[si];
                            ds[si] += p * dy[r * hidden + c];
                        }
                        dw[r * width + j] += dot;
                    }
                });
            });
        }
        return yn;
    }

    Node collapse(GradTape t, Node w, Node streams) {
        return collapse(t, null, w, mixes(), streams, hc, hidden);
    }

    Node collapse(GradTape t, org.orbitrl.kernels.Backend b, Node w, Node streams) {
        return collapse(t, b, w, mixes(), streams, hc, hidden);
    }

    /** New streams [N, hc·H]: out_k = post_k · f + Σ_j comb[j,k] · in_j, on the host. */
    Node expand(GradTape t, Node w, Node f, Node streams) {
        return expand(t, null, w, f, streams);
    }

    /**
     * As {@link #expand(GradTape, Node, Node, Node)}; on {@code b} where the streams are in its device memory
     * ({@link HyperConnectionOps#expand}).
     */
    Node expand(GradTape t, org.orbitrl.kernels.Backend b, Node w, Node f, Node streams) {
        int mm = mixes();
        int n = f.size() / hidden;
        if (b != null && Ops.keepsValues(b) && streams.onDevice()) {
            return HyperConnectionOps.expand(t, b, w, mm, f, streams, hc, hidden);
        }
        float[] wv = w.v();
        float[] fv = f.v();
        float[] sv = streams.v();
        float[] y = new float[n * hc * hidden];
        Ops.forRows(n, (long) hc * hidden, r -> {
            for (int k = 0; k < hc; k++) {
                float post = wv[r * mm + hc + k];
                for (int c = 0; c < hidden; c++) {
                    float s = post * fv[r * hidden + c];
                    for (int j = 0; j < hc; j++) {
                        s += wv[r * mm + 2 * hc + j * hc + k] * sv[(r * hc + j) * hidden + c];
                    }
                    y[(r * hc + k) * hidden + c] = s;
                }
            }
        });
        Node yn = new Node(y);
        if (t != null) {
            t.record(yn, () -> {
                float[] dy = yn.gradOrNull();
                float[] dw = w.grad();
                float[] df = f.grad();
                float[] ds = streams.grad();
                Ops.forRows(n, (long) hc * hidden, r -> {
                    for (int k = 0; k < hc; k++) {
                        float post = wv[r * mm + hc + k];
                        float dPost = 0;
                        for (int c = 0; c < hidden; c++) {
                            float d = dy[(r * hc + k) * hidden + c];
                            dPost += d * fv[r * hidden + c];
                            df[r * hidden + c] += d * post;
                        }
                        dw[r * mm + hc + k] += dPost;
                        for (int j = 0; j < hc; j++) {
                            float comb = wv[r * mm + 2 * hc + j * hc + k];
                            float dComb = 0;
                            for (int c = 0; c < hidden; c++) {
                                float d = dy[(r * hc + k) * hidden + c];
                                int si = (r * hc + j) * hidden + c;
                                dComb += d * sv[si];
                                ds[si] += d * comb;
                            }
                            dw[r * mm + 2 * hc + j * hc + k] += dComb;
                        }
                    }
                });
            });
        }
        return yn;
    }

    /**
     * The final collapse before the model norm: pre = sigmoid(fn·norm(x) · scale + base) + eps with
     * {@code fn} [hc, hc·H], {@code scale} [1], {@code base} [hc].
     */
    static Node head(GradTape t, org.orbitrl.kernels.Backend b, Node streams, float[] fn, float[] base, float scale,
                     int hc, int hidden, float hcEps, float normEps) {
        int n = streams.size() / (hc * hidden);
        Node flat = Ops.rmsNorm(t, b, streams, hc * hidden, null, normEps);
        Node m = Ops.matmulT(t, b, flat, n, fn, hc, hc * hidden);
        float[] mv = m.v();
        float[] pre = new float[n * hc];
        for (int i = 0; i < pre.length; i++) {
            pre[i] = sigmoid(mv[i] * scale + base[i % hc]) + hcEps;
        }
        Node p = new Node(pre);
        if (t != null) {
            t.record(p, () -> {
                float[] dp = p.gradOrNull();
                float[] dm = m.grad();
                for (int i = 0; i < pre.length; i++) {
                    float s = sigmoid(mv[i] * scale + base[i % hc]);
                    dm[i] += dp[i] * s * (1 - s) * scale;
                }
            });
        }
        return collapse(t, b, p, hc, streams, hc, hidden);
    }
}
