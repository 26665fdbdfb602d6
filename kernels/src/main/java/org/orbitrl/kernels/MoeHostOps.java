package org.orbitrl.kernels;

import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.ArrayList;
import java.util.List;

/**
 * Host implementations of the grouped mixture-of-experts operations of {@link Backend} (the
 * {@code moe*} defaults): the reference for every backend, and the CPU backend's implementation.
 * The routers' choice of experts is {@link MoeRoutingHostOps}'.
 *
 * <p>Shapes, for T tokens, k experts a token, P = T·k (token, expert) pairs, E experts: a pair
 * index p is {@code token·k + j}; pairs grouped by expert are listed by {@code order} [P] (expert
 * e's pairs are {@code order[offsets[e] .. offsets[e + 1])}, ascending), and {@code position} [P]
 * is its inverse ({@code position[order[i]] = i}).
 */
public final class MoeHostOps {
    private MoeHostOps() {
    }

    /** See {@link Backend#moeGroup}. */
    public static void group(Tensor ids, int experts, Tensor offsets, Tensor order, Tensor position) {
        int[] id = ids.toIntArray();
        int p = id.length;
        if (offsets.numel() != experts + 1 || order.numel() != p || position.numel() != p) {
            throw new IllegalArgumentException("moeGroup: " + p + " pairs of " + experts + " experts into offsets " + offsets
                    + " [E + 1], order " + order + " and position " + position + " [pairs]");
        }
        int[] off = new int[experts + 1];
        for (int i = 0; i < p; i++) {
            if (id[i] < 0 || id[i] >= experts) {
                throw new IndexOutOfBoundsException("moeGroup: pair " + i + " routed to expert " + id[i] + " of " + experts);
            }
            off[id[i] + 1]++;
        }
        for (int e = 0; e < experts; e++) {
            off[e + 1] += off[e];
        }
        int[] fill = off.clone();
        int[] ord = new int[p];
        int[] pos = new int[p];
        for (int i = 0; i < p; i++) {
            int slot = fill[id[i]]++;
            ord[slot] = i;
            pos[i] = slot;
        }
        offsets.copyFrom(Tensor.ofInts(off, offsets.shape()));
        order.copyFrom(Tensor.ofInts(ord, order.shape()));
        position.copyFrom(Tensor.ofInts(pos, position.shape()));
    }

    /** See {@link Backend#moeGather}. */
    public static void gather(Tensor src, Tensor order, int k, Tensor weights, Tensor dst) {
        int h = src.size(-1);
        int t = rows(src, h);
        int[] ord = order.toIntArray();
        int p = ord.length;
        if (dst.numel() != (long) p * h || dst.size(-1) != h || (weights != null && weights.numel() != (long) t * k)
                || p > t * k) {
            throw new IllegalArgumentException("moeGather: " + p + " pairs (top " + k + ") of " + src + " into " + dst
                    + (weights == null ? "" : " weighted by " + weights));
        }
        float[] s = src.contiguous().toFloatArray();
        float[] w = weights == null ? null : weights.contiguous().toFloatArray();
        float[] d = new float[p * h];
        for (int i = 0; i < p; i++) {
            int pair = ord[i];
            int tok = pair / k;
            float scale = w == null ? 1f : w[pair];
            for (int c = 0; c < h; c++) {
                d[i * h + c] = w == null ? s[tok * h + c] : scale * s[tok * h + c];
            }
        }
        dst.copyFrom(Tensor.of(d, dst.shape()));
    }

    /** See {@link Backend#moeCombineGrouped}. */
    public static void combine(Tensor ys, Tensor position, Tensor weights, Tensor out, boolean accumulate) {
        int h = out.size(-1);
        int t = rows(out, h);
        int[] pos = position.toIntArray();
        int k = t == 0 ? 1 : pos.length / t;
        if (pos.length != t * k || ys.numel() != (long) pos.length * h || (weights != null && weights.numel() != pos.length)) {
            throw new IllegalArgumentException("moeCombineGrouped: " + ys + " grouped rows into " + out + " through "
                    + pos.length + " positions" + (weights == null ? "" : ", weights " + weights));
        }
        float[] y = ys.contiguous().toFloatArray();
        float[] w = weights == null ? null : weights.contiguous().toFloatArray();
        float[] o = accumulate ? out.contiguous().toFloatArray() : new float[t * h];
        float[] acc = new float[h];
        for (int r = 0; r < t; r++) {
            java.util.Arrays.fill(acc, 0);
            for (int j = 0; j < k; j++) {
                int pair = r * k + j;
                float scale = w == null ? 1f : w[pair];
                int row = pos[pair];
                for (int c = 0; c < h; c++) {
                    acc[c] += scale * y[row * h + c];
                }
            }
            for (int c = 0; c < h; c++) {
                o[r * h + c] += acc[c];
            }
        }
        out.copyFrom(Tensor.of(o, out.shape()));
    }

    /** See {@link Backend#moeExpertBias}. */
    public static void expertBias(Tensor ys, Tensor bias, Tensor offsets) {
        int[] off = offsets.toIntArray();
        int e = off.length - 1;
        int n = ys.size(-1);
        int p = rows(ys, n);
        checkExpertBias(ys, bias, off.length, e, n, p);
        for (int i = 0; i < e; i++) {
            if (off[i] < 0 || off[i] > off[i + 1] || off[i + 1] > p || (i == 0 && off[0] != 0) || (i == e - 1 && off[e] != p)) {
                throw new IllegalArgumentException("moeExpertBias: offsets " + java.util.Arrays.toString(off)
                        + " are not ascending from 0 to the " + p + " rows of " + ys);
            }
        }
        float[] y = ys.contiguous().toFloatArray();
        float[] w = bias.contiguous().toFloatArray();
        for (int i = 0; i < e; i++) {
            for (int r = off[i]; r < off[i + 1]; r++) {
                for (int c = 0; c < n; c++) {
                    y[r * n + c] += w[i * n + c];
                }
            }
        }
        ys.copyFrom(Tensor.of(y, ys.shape()));
    }

    /** See {@link Backend#moeExpertBiasPairs}. */
    public static void expertBiasPairs(Tensor ys, Tensor bias, Tensor ids) {
        int[] id = ids.toIntArray();
        int n = ys.size(-1);
        int p = rows(ys, n);
        int e = bias.rank() == 2 ? bias.size(0) : 0;
        checkExpertBias(ys, bias, e + 1, e, n, p);
        if (id.length != p) {
            throw new IllegalArgumentException("moeExpertBiasPairs: " + id.length + " ids for the " + p + " rows of " + ys);
        }
        float[] y = ys.contiguous().toFloatArray();
        float[] w = bias.contiguous().toFloatArray();
        for (int r = 0; r < p; r++) {
            if (id[r] < 0 || id[r] >= e) {
                throw new IllegalArgumentException("moeExpertBiasPairs: expert id " + id[r] + " of pair " + r + " outside [0, " + e + ")");
            }
            for (int c = 0; c < n; c++) {
                y[r * n + c] += w[id[r] * n + c];
            }
        }
        ys.copyFrom(Tensor.of(y, ys.shape()));
    }

    /** Shapes of {@link Backend#moeExpertBias}: ys f32 [P, N], bias f32 [E, N], offsets i32 [E + 1]. */
    public static void checkExpertBias(Tensor ys, Tensor bias, long offsets, int e, int n, int p) {
        if (ys.dtype() != DType.F32 || bias.dtype() != DType.F32 || bias.rank() != 2 || bias.size(0) != e || bias.size(1) != n
                || e < 1 || offsets != e + 1) {
            throw new IllegalArgumentException("moeExpertBias: rows " + ys + " (f32 [P, N]), bias " + bias + " (f32 [E, N]) and "
                    + offsets + " offsets (E + 1) do not match");
        }
    }

    /** See {@link Backend#moeExpertMatmulPairs}: each pair's row through its expert with the backend's own products. */
    public static void expertMatmulPairs(Backend b, Tensor x, int xDiv, ExpertWeights w, Tensor ids, float scale, Tensor y,
                                         boolean accumulate) {
        int[] id = ids.toIntArray();
        int p = id.length;
        int n = w.rows();
        int k = w.cols();
        if (xDiv <= 0 || p % xDiv != 0 || x.size(-1) != k || x.numel() != (long) p / xDiv * k || y.size(-1) != n
                || y.numel() != (long) p * n) {
            throw new IllegalArgumentException("moeExpertMatmulPairs: x " + x + " (a row per " + xDiv + " pairs), " + p + " pairs "
                    + ids + " -> y " + y + " for experts [" + n + ", " + k + "]");
        }
        Tensor xr = x.contiguous().reshape((long) p / xDiv, k);
        float[] out = accumulate ? y.contiguous().toFloatArray() : new float[p * n];
        Tensor row = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, 1, n);
        try {
            for (int i = 0; i < p; i++) {
                int e = id[i];
                if (e < 0 || e >= w.experts() || !w.held(e)) {
                    throw new IndexOutOfBoundsException("moeExpertMatmulPairs: pair " + i + " routed to expert " + e + " of "
                            + w.experts() + (e >= 0 && e < w.experts() ? " (not held by this rank)" : ""));
                }
                Tensor xi = xr.slice(0, i / xDiv, i / xDiv + 1);
                if (w.quantized(e) != null) {
                    b.matmulQuantized(xi, w.quantized(e), row);
                } else {
                    b.matmul(xi, w.dense(e), row);
                }
                float[] v = row.toFloatArray();
                for (int c = 0; c < n; c++) {
                    out[i * n + c] += scale * v[c];
                }
            }
        } finally {
            b.allocator().release(row);
        }
        y.copyFrom(Tensor.of(out, y.shape()));
    }

    /** See {@link Backend#moeCombinePairs}. */
    public static void combinePairs(Tensor ys, Tensor weights, Tensor out, boolean accumulate) {
        int h = out.size(-1);
        int t = rows(out, h);
        int k = t == 0 ? 1 : Math.toIntExact(weights.numel() / t);
        if (weights.numel() != (long) t * k || ys.numel() != (long) t * k * h || ys.size(-1) != h) {
            throw new IllegalArgumentException("moeCombinePairs: " + ys + " pair rows into " + out + " with weights " + weights
                    + " [tokens, k]");
        }
        int[] identity = new int[t * k];   // pair p is row p of ys
        for (int i = 0; i < identity.length; i++) {
            identity[i] = i;
        }
        combine(ys, Tensor.ofInts(identity, t * k), weights, out, accumulate);
    }

    /** See {@link Backend#moeWeightGrad}. */
    public static void weightGrad(Tensor dout, Tensor ys, Tensor position, Tensor dWeight) {
        int h = dout.size(-1);
        int t = rows(dout, h);
        int[] pos = position.toIntArray();
        int k = t == 0 ? 1 : pos.length / t;
        if (pos.length != t * k || ys.numel() != (long) pos.length * h || dWeight.numel() != pos.length) {
            throw new IllegalArgumentException("moeWeightGrad: dout " + dout + ", grouped outputs " + ys + ", " + pos.length
                    + " positions into " + dWeight);
        }
        float[] d = dout.contiguous().toFloatArray();
        float[] y = ys.contiguous().toFloatArray();
        float[] g = new float[pos.length];
        for (int pair = 0; pair < pos.length; pair++) {
            int tok = pair / k;
            int row = pos[pair];
            float dot = 0;
            for (int c = 0; c < h; c++) {
                dot += d[tok * h + c] * y[row * h + c];
            }
            g[pair] = dot;
        }
        dWeight.copyFrom(Tensor.of(g, dWeight.shape()));
    }

    /**
     * See {@link Backend#moeExpertMatmul} ({@code transposed} false) and
     * {@link Backend#moeExpertMatmulTransposed} (true), on any backend through its own matmul,
     * dequantize and allocator: quantized experts are dequantized {@code chunk} at a time into one
     * f32 buffer [chunk, rows·cols] (chunk ≤ 0: each multiplied through its quantized kernel), a
     * temporary of the call.
     */
    public static void expertMatmul(Backend b, Tensor in, ExpertWeights w, int[] offsets, Tensor out, int chunk, boolean transposed) {
        String op = transposed ? "moeExpertMatmulTransposed" : "moeExpertMatmul";
        w.requireHeld(op, offsets);
        int inCols = transposed ? w.rows() : w.cols();
        int outCols = transposed ? w.cols() : w.rows();
        int p = offsets[w.experts()];
        if (in.size(-1) != inCols || in.numel() != (long) p * inCols || out.size(-1) != outCols || out.numel() != (long) p * outCols) {
            throw new IllegalArgumentException(op + ": " + p + " grouped rows " + in + " -> " + out + " for experts ["
                    + w.rows() + ", " + w.cols() + "]");
        }
        List<Integer> active = new ArrayList<>();
        for (int e = 0; e < w.experts(); e++) {
            if (offsets[e + 1] > offsets[e]) {
                active.add(e);
            }
        }
        Tensor buffer = null; // [chunk, rows·cols] f32
        int c = Math.max(1, chunk);
        for (int start = 0; start < active.size(); start += c) {
            int end = Math.min(active.size(), start + c);
            Tensor[] dense = new Tensor[end - start];
            for (int i = start; i < end; i++) {
                int e = active.get(i);
                QuantizedTensor q = w.quantized(e);
                if (q != null && chunk > 0) {
                    if (buffer == null) {
                        // a per-call temporary: released like the call's other activations when dropped
                        buffer = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, Math.min(c, active.size()),
                                (long) w.rows() * w.cols());
                    }
                    dense[i - start] = buffer.select(0, i - start).reshape(w.rows(), w.cols());
                    b.dequantize(q, dense[i - start]);
                } else {
                    dense[i - start] = w.dense(e);
                }
            }
            for (int i = start; i < end; i++) {
                int e = active.get(i);
                Tensor x = in.reshape((long) p, inCols).slice(0, offsets[e], offsets[e + 1]);
                Tensor y = out.reshape((long) p, outCols).slice(0, offsets[e], offsets[e + 1]);
                Tensor d = dense[i - start];
                if (d != null && transposed) {
                    b.matmulTransposed(x, d, y);
                } else if (d != null) {
                    b.matmul(x, d, y);
                } else if (transposed) {
                    b.matmulQuantizedTransposed(x, w.quantized(e), y);
                } else {
                    b.matmulQuantized(x, w.quantized(e), y);
                }
            }
        }
        if (buffer != null) {
            b.allocator().release(buffer);
        }
    }

    /**
     * {@link Backend#moeExpertMatmulAccumulate} as the plain product (quantized experts {@code chunk} at a
     * time) into a temporary (released at the end) and an axpy.
     */
    public static void expertMatmulAccumulate(Backend b, Tensor in, ExpertWeights w, int[] offsets, float scale, Tensor out,
                                              boolean transposed, int chunk) {
        String op = transposed ? "moeExpertMatmulTransposedAccumulate" : "moeExpertMatmulAccumulate";
        int outCols = transposed ? w.cols() : w.rows();
        int p = offsets[offsets.length - 1];
        if (out.size(-1) != outCols || out.numel() != (long) p * outCols) {
            throw new IllegalArgumentException(op + ": " + p + " grouped rows " + in + " -> " + out + " for experts ["
                    + w.rows() + ", " + w.cols() + "]");
        }
        Tensor d = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, p, outCols);   // [P, outCols]
        try {
            if (transposed) {
                b.moeExpertMatmulTransposed(in, w, offsets, d, chunk);
            } else {
                b.moeExpertMatmul(in, w, offsets, d, chunk);
            }
            b.axpy(scale, d, out.rank() == 2 ? out : out.reshape((long) p, outCols));
        } finally {
            b.allocator().release(d);
        }
    }

    /**
     * See {@link Backend#moeExpertWeightGrad}, on any backend through its own {@code matmulTN}, one
     * product per expert with rows.
     */
    public static void expertWeightGrad(Backend b, Tensor dys, Tensor xs, int[] offsets, float scale, Tensor[] grads) {
        int experts = grads.length;
        if (offsets.length != experts + 1) {
            throw new IllegalArgumentException("moeExpertWeightGrad: " + offsets.length + " offsets for " + experts
                    + " gradients (expected E + 1)");
        }
        int p = offsets[experts];
        int n = dys.size(-1);
        int k = xs.size(-1);
        if (dys.numel() != (long) p * n || xs.numel() != (long) p * k) {
            throw new IllegalArgumentException("moeExpertWeightGrad: dys " + dys + " and xs " + xs + " must hold " + p + " grouped rows");
        }
        Tensor d = dys.rank() == 2 ? dys : dys.reshape((long) p, n);   // [P, N]
        Tensor x = xs.rank() == 2 ? xs : xs.reshape((long) p, k);      // [P, K]
        for (int e = 0; e < experts; e++) {
            if (offsets[e + 1] > offsets[e]) {
                if (grads[e] == null) {
                    throw new IllegalArgumentException("moeExpertWeightGrad: expert " + e + " has "
                            + (offsets[e + 1] - offsets[e]) + " rows but no gradient");
                }
                b.matmulTN(d.slice(0, offsets[e], offsets[e + 1]), x.slice(0, offsets[e], offsets[e + 1]), scale, grads[e]);
            }
        }
    }

    private static int rows(Tensor t, int cols) {
        return Math.toIntExact(t.numel() / Math.max(1, cols));
    }
}
