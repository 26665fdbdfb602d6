package org.orbitrl.kernels;

/**
 * Host implementations of the mixture-of-experts routing operations of {@link Backend}: the softmax router's top-k
 * ({@code moeTopk}), DeepSeek-V3's group-limited sigmoid router ({@code moeSigmoidTopk}), DeepSeek V4's score router
 * ({@code moeScoreTopk}) and their backwards: the reference for every backend, and the CPU backend's implementation.
 * The grouped expert operations that follow a choice are {@link MoeHostOps}'.
 *
 * <p>Shapes, for T tokens, k experts a token and E experts: probabilities, logits or scores [T, E]; the choice's ids,
 * weights and chosen values [T, k], pair p = {@code token·k + j}.
 */
public final class MoeRoutingHostOps {
    private MoeRoutingHostOps() {
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
