package org.orbitrl.kernels;

import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.ArrayList;
import java.util.List;

/**
 * Host implementations of the grouped mixture-of-experts operations of {@link Backend} (the
 * {@code moe*} defaults): the reference for every backend, and the CPU backend's implementation.
 *
 * <p>Shapes, for T tokens, k experts a token, P = T·k (token, expert) pairs, E experts: a pair
 * index p is {@code token·k + j}; pairs grouped by expert are listed by {@code order} [P] (expert
 * e's pairs are {@code order[offsets[e] .. offsets[e + 1])}, ascending), and {@code position} [P]
 * is its inverse ({@code position[order[i]] = i}).
 */
public final class MoeHostOps {
    private MoeHostOps() {
    }

    /** See {@link Backend#moeTopk}. */
    public static void topk(Tensor probs, int k, boolean normalize, Tensor chosen, Tensor weights, Tensor ids) {
        int e = probs.size(-1);
        int t = rows(probs, e);
        checkPairs("moeTopk", t, k, chosen, weights, ids);
        if (k <= 0 || k > e) {
            throw new IllegalArgumentException("moeTopk: top " + k + " of " + e + " experts");
        }
        float[] p = probs.contiguous().toFloatArray();
        float[] c = new float[t * k];
        float[] w = new float[t * k];
        int[] id = new int[t * k];
        boolean[] taken = new boolean[e];
        for (int r = 0; r < t; r++) {
            java.util.Arrays.fill(taken, false);
            float sum = 0;
            for (int j = 0; j < k; j++) {
                int best = -1;
                for (int x = 0; x < e; x++) {   // ties to the lower index
                    if (!taken[x] && (best < 0 || p[r * e + x] > p[r * e + best])) {
                        best = x;
                    }
                }
                taken[best] = true;
                id[r * k + j] = best;
                c[r * k + j] = p[r * e + best];
                sum += c[r * k + j];
            }
            for (int j = 0; j < k; j++) {
                w[r * k + j] = normalize ? c[r * k + j] / sum : c[r * k + j];
            }
        }
        chosen.copyFrom(Tensor.of(c, chosen.shape()));
        weights.copyFrom(Tensor.of(w, weights.shape()));
        ids.copyFrom(Tensor.ofInts(id, ids.shape()));
    }

    /** See {@link Backend#moeSigmoidTopk}. */
    public static void sigmoidTopk(Tensor logits, Tensor bias, int groups, int topkGroups, int k, boolean normalize, float scaling,
                                   Tensor scores, Tensor weights, Tensor ids) {
        int e = logits.size(-1);
        int t = rows(logits, e);
        checkSigmoidRouting("moeSigmoidTopk", logits, bias, groups, topkGroups, k, scores);
        checkPairs("moeSigmoidTopk", t, k, weights, weights, ids);
        float[] s = logits.contiguous().toFloatArray();
        for (int i = 0; i < s.length; i++) {
            s[i] = (float) (1.0 / (1.0 + Math.exp(-s[i])));
        }
        float[] bs = bias == null ? new float[e] : bias.contiguous().toFloatArray();
        int per = e / groups;
        int[] expert = new int[t * k];
        float[] weight = new float[t * k];
        float[] choice = new float[e];
        float[] groupScore = new float[groups];
        boolean[] keep = new boolean[groups];
        for (int r = 0; r < t; r++) {
            for (int x = 0; x < e; x++) {
                choice[x] = s[r * e + x] + bs[x];
            }
            for (int g = 0; g < groups; g++) {             // the sum of the group's two largest biased scores
                float m1 = Float.NEGATIVE_INFINITY;
                float m2 = Float.NEGATIVE_INFINITY;
                for (int x = g * per; x < (g + 1) * per; x++) {
                    if (choice[x] > m1) {
                        m2 = m1;
                        m1 = choice[x];
                    } else if (choice[x] > m2) {
                        m2 = choice[x];
                    }
                }
                groupScore[g] = m1 + m2;
                keep[g] = false;
            }
            for (int j = 0; j < topkGroups; j++) {
                int best = -1;
                for (int g = 0; g < groups; g++) {
                    if (!keep[g] && (best < 0 || groupScore[g] > groupScore[best])) {
                        best = g;
                    }
                }
                keep[best] = true;
            }
            for (int x = 0; x < e; x++) {
                if (!keep[x / per]) {
                    choice[x] = 0f;
                }
            }
            float sum = 0;
            for (int j = 0; j < k; j++) {
                int best = -1;
                for (int x = 0; x < e; x++) {                // ties to the lower expert
                    if (!Float.isNaN(choice[x]) && (best < 0 || choice[x] > choice[best])) {
                        best = x;
                    }
                }
                choice[best] = Float.NaN;                   // taken
                expert[r * k + j] = best;
                weight[r * k + j] = s[r * e + best];
                sum += s[r * e + best];
            }
            float denom = normalize ? sum + 1e-20f : 1f;
            for (int j = 0; j < k; j++) {
                weight[r * k + j] = weight[r * k + j] / denom * scaling;
            }
        }
        scores.copyFrom(Tensor.of(s, scores.shape()));
        weights.copyFrom(Tensor.of(weight, weights.shape()));
        ids.copyFrom(Tensor.ofInts(expert, ids.shape()));
    }

    /** See {@link Backend#moeScoreTopk}. */
    public static void scoreTopk(Tensor logits, boolean sqrtSoftplus, Tensor bias, Tensor fixed, int k, float scaling,
                                 Tensor scores, Tensor weights, Tensor ids) {
        int e = logits.size(-1);
        int t = rows(logits, e);
        checkScoreRouting("moeScoreTopk", logits, bias, fixed, k, scores);
        checkPairs("moeScoreTopk", t, k, weights, weights, ids);
        float[] s = logits.contiguous().toFloatArray();
        for (int i = 0; i < s.length; i++) {
            s[i] = sqrtSoftplus ? sqrtSoftplus(s[i]) : (float) (1.0 / (1.0 + Math.exp(-s[i])));
        }
        float[] bs = bias == null ? new float[e] : bias.contiguous().toFloatArray();
        int[] expert = fixed == null ? new int[t * k] : fixed.toIntArray();
        float[] weight = new float[t * k];
        float[] choice = new float[e];
        for (int r = 0; r < t; r++) {
            if (fixed == null) {
                for (int x = 0; x < e; x++) {
                    choice[x] = s[r * e + x] + bs[x];
                }
                for (int j = 0; j < k; j++) {
                    int best = -1;
                    for (int x = 0; x < e; x++) {                // ties to the lower expert
                        if (!Float.isNaN(choice[x]) && (best < 0 || choice[x] > choice[best])) {
                            best = x;
                        }
                    }
                    if (best < 0) {
                        throw new IllegalArgumentException("moeScoreTopk: token " + r + " has " + j + " experts of a number score,"
                                + " fewer than its top " + k + " (NaN logits)");
                    }
                    choice[best] = Float.NaN;                   // taken
                    expert[r * k + j] = best;
                }
            }
            float sum = 0;
            for (int j = 0; j < k; j++) {
                int x = expert[r * k + j];
                if (x < 0 || x >= e) {
                    throw new IndexOutOfBoundsException("moeScoreTopk: fixed expert " + x + " of token " + r + " (slot " + j
                            + ") is outside the " + e + " experts");
                }
                sum += s[r * e + x];
            }
            float denom = sum + 1e-20f;
            for (int j = 0; j < k; j++) {
                weight[r * k + j] = s[r * e + expert[r * k + j]] / denom * scaling;
            }
        }
        scores.copyFrom(Tensor.of(s, scores.shape()));
        weights.copyFrom(Tensor.of(weight, weights.shape()));
        ids.copyFrom(Tensor.ofInts(expert, ids.shape()));
    }

    /** sqrt(softplus(x)) as {@link Backend#moeScoreTopk} rounds it: softplus in double (x itself above 20) to f32, its root. */
    public static float sqrtSoftplus(float x) {
        float sp = x > 20f ? x : (float) Math.log1p(Math.exp(x));
        return (float) Math.sqrt(sp);
    }

    /** The shapes {@link Backend#moeScoreTopk} takes. */
    public static void checkScoreRouting(String op, Tensor logits, Tensor bias, Tensor fixed, int k, Tensor scores) {
        int e = logits.size(-1);
        if (logits.dtype() != DType.F32 || scores.dtype() != DType.F32 || scores.numel() != logits.numel()) {
            throw new IllegalArgumentException(op + ": logits " + logits + " and scores " + scores + " must be f32 [tokens, experts] alike");
        }
        if (bias != null && (bias.numel() != e || bias.dtype() != DType.F32)) {
            throw new IllegalArgumentException(op + ": bias " + bias + " must be f32 [" + e + "] (e_score_correction_bias)");
        }
        if (k <= 0 || k > e) {
            throw new IllegalArgumentException(op + ": top " + k + " of " + e + " experts");
        }
        if (fixed != null && (fixed.dtype() != DType.I32 || fixed.numel() != (logits.numel() / Math.max(1, e)) * k)) {
            throw new IllegalArgumentException(op + ": fixed experts " + fixed + " must be i32 [tokens, " + k + "] (tid2eid's rows)");
        }
    }

    /** See {@link Backend#moeSigmoidRouterBackward}. */
    public static void sigmoidRouterBackward(Tensor scores, Tensor ids, Tensor dWeight, boolean normalize, float scaling,
                                             Tensor dLogits) {
        int e = scores.size(-1);
        int t = rows(scores, e);
        int k = t == 0 ? 1 : Math.toIntExact(ids.numel() / t);
        checkPairs("moeSigmoidRouterBackward", t, k, dWeight, dWeight, ids);
        if (dLogits.numel() != scores.numel() || dLogits.dtype() != DType.F32 || scores.dtype() != DType.F32) {
            throw new IllegalArgumentException("moeSigmoidRouterBackward: dLogits " + dLogits + " must be f32 like scores " + scores);
        }
        float[] sc = scores.contiguous().toFloatArray();
        float[] dw = dWeight.contiguous().toFloatArray();
        int[] id = ids.toIntArray();
        float[] dl = new float[t * e];
        for (int r = 0; r < t; r++) {
            // w_j = scaling · s_j / (Σ s + 1e-20) -> scores s = sigmoid(logits) -> router logits
            float sum = 0;
            float dot = 0;
            for (int j = 0; j < k; j++) {
                sum += sc[r * e + id[r * k + j]];
            }
            float denom = normalize ? sum + 1e-20f : 1f;
            for (int j = 0; j < k; j++) {
                dot += dw[r * k + j] * scaling * sc[r * e + id[r * k + j]];
            }
            for (int j = 0; j < k; j++) {
                int x = id[r * k + j];
                float g = dw[r * k + j] * scaling / denom;
                float ds = normalize ? g - dot / (denom * denom) : g;
                float s = sc[r * e + x];
                dl[r * e + x] += ds * s * (1 - s);
            }
        }
        dLogits.copyFrom(Tensor.of(dl, dLogits.shape()));
    }

    /** The shapes of a sigmoid routing call: logits and scores f32 [T, E] alike, bias [E] or null, groups dividing E. */
    public static void checkSigmoidRouting(String op, Tensor logits, Tensor bias, int groups, int topkGroups, int k, Tensor scores) {
        int e = logits.size(-1);
        if (logits.dtype() != DType.F32 || scores.dtype() != DType.F32 || scores.numel() != logits.numel()) {
            throw new IllegalArgumentException(op + ": logits " + logits + " and scores " + scores + " must be f32 [tokens, experts] alike");
        }
        if (bias != null && (bias.numel() != e || bias.dtype() != DType.F32)) {
            throw new IllegalArgumentException(op + ": bias " + bias + " must be f32 [" + e + "] (e_score_correction_bias)");
        }
        if (groups <= 0 || e % groups != 0 || topkGroups <= 0 || topkGroups > groups) {
            throw new IllegalArgumentException(op + ": " + e + " experts in " + groups + " groups (n_group), " + topkGroups
                    + " of them kept (topk_group): n_group must divide the experts and topk_group lie in 1.." + groups);
        }
        if (k <= 0 || k > e) {
            throw new IllegalArgumentException(op + ": top " + k + " of " + e + " experts");
        }
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

    /** See {@link Backend#moeRouterBackward}. */
    public static void routerBackward(Tensor probs, Tensor chosen, Tensor weights, Tensor ids, Tensor dWeight, boolean normalize,
                                      Tensor dLogits) {
        int e = probs.size(-1);
        int t = rows(probs, e);
        int k = t == 0 ? 1 : Math.toIntExact(ids.numel() / t);
        checkPairs("moeRouterBackward", t, k, chosen, weights, ids);
        if (dWeight.numel() != (long) t * k || dLogits.numel() != probs.numel()) {
            throw new IllegalArgumentException("moeRouterBackward: dWeight " + dWeight + " [tokens, k] and dLogits " + dLogits
                    + " like probs " + probs);
        }
        float[] p = probs.contiguous().toFloatArray();
        float[] c = chosen.contiguous().toFloatArray();
        float[] w = weights.contiguous().toFloatArray();
        float[] dw = dWeight.contiguous().toFloatArray();
        int[] id = ids.toIntArray();
        float[] dl = new float[t * e];
        float[] dProb = new float[e];
        for (int r = 0; r < t; r++) {
            java.util.Arrays.fill(dProb, 0);
            float sumChosen = 0;
            float dotWd = 0;
            for (int j = 0; j < k; j++) {
                sumChosen += c[r * k + j];
                dotWd += w[r * k + j] * dw[r * k + j];
            }
            for (int j = 0; j < k; j++) {
                int s = r * k + j;
                dProb[id[s]] += normalize ? (dw[s] - dotWd) / sumChosen : dw[s];
            }
            float pd = 0;
            for (int x = 0; x < e; x++) {
                pd += p[r * e + x] * dProb[x];
            }
            for (int x = 0; x < e; x++) {
                dl[r * e + x] = p[r * e + x] * (dProb[x] - pd);
            }
        }
        dLogits.copyFrom(Tensor.of(dl, dLogits.shape()));
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

    private static void checkPairs(String op, int t, int k, Tensor chosen, Tensor weights, Tensor ids) {
        long p = (long) t * k;
        if (chosen.numel() != p || weights.numel() != p || ids.numel() != p || chosen.dtype() != DType.F32
                || weights.dtype() != DType.F32 || (ids.dtype() != DType.I32 && ids.dtype() != DType.I64)) {
            throw new IllegalArgumentException(op + ": chosen " + chosen + ", weights " + weights + " (f32) and ids " + ids
                    + " (i32) must be [" + t + ", " + k + "]");
        }
    }
}
