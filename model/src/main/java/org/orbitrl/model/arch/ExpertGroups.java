package org.orbitrl.model.arch;

import org.orbitrl.kernels.Tensor;

/**
 * Tokens grouped by the expert they were routed to: for expert e, the token rows (ascending) and
 * their routing weights. Built from the token-major top-k choice.
 */
final class ExpertGroups {
    private final int[] offsets;   // [experts + 1]
    private final int[] tokens;    // [N*k], grouped by expert
    private final float[] weights; // [N*k]
    private final int[] slots;     // [N*k] token-major index (token*k + j) of each grouped entry

    private ExpertGroups(int[] offsets, int[] tokens, float[] weights, int[] slots) {
        this.offsets = offsets;
        this.tokens = tokens;
        this.weights = weights;
        this.slots = slots;
    }

    static ExpertGroups of(int[] expert, float[] weight, int topK, int experts) {
        int[] offsets = new int[experts + 1];
        for (int e : expert) {
            if (e < 0 || e >= experts) {
                throw new IllegalArgumentException("router chose expert " + e + " of " + experts);
            }
            offsets[e + 1]++;
        }
        for (int e = 0; e < experts; e++) {
            offsets[e + 1] += offsets[e];
        }
        int[] fill = offsets.clone();
        int[] tokens = new int[expert.length];
        float[] weights = new float[expert.length];
        int[] slots = new int[expert.length];
        for (int i = 0; i < expert.length; i++) {
            int slot = fill[expert[i]]++;
            tokens[slot] = i / topK;
            weights[slot] = weight[i];
            slots[slot] = i;
        }
        return new ExpertGroups(offsets, tokens, weights, slots);
    }

    int count(int e) {
        return offsets[e + 1] - offsets[e];
    }

    /** Number of experts with at least one token. */
    int active() {
        int n = 0;
        for (int e = 0; e + 1 < offsets.length; e++) {
            n += count(e) > 0 ? 1 : 0;
        }
        return n;
    }

    int[] tokenArray(int e) {
        return java.util.Arrays.copyOfRange(tokens, offsets[e], offsets[e + 1]);
    }

    float[] weightArray(int e) {
        return java.util.Arrays.copyOfRange(weights, offsets[e], offsets[e + 1]);
    }

    /** The token-major routing slot (token*k + j) of expert e's i-th token. */
    int slot(int e, int i) {
        return slots[offsets[e] + i];
    }

    Tensor tokens(int e) {
        return Tensor.ofInts(java.util.Arrays.copyOfRange(tokens, offsets[e], offsets[e + 1]), count(e));
    }

    Tensor weights(int e) {
        return Tensor.of(java.util.Arrays.copyOfRange(weights, offsets[e], offsets[e + 1]), count(e));
    }
}
