package org.orbitrl.model.adapter;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.TestSafetensors;

import java.util.ArrayList;
import java.util.List;

/** Shared pieces of the adapter fixture tests: the fixture's inputs and its loss gradient. */
final class FixtureLoss {
    private FixtureLoss() {
    }

    /** The fixture's token rows, from {@code input_ids} [B, T] i64. */
    static List<int[]> sequences(TestSafetensors reference) {
        Tensor ids = reference.get("input_ids");
        List<int[]> seqs = new ArrayList<>();
        for (int b = 0; b < ids.size(0); b++) {
            int[] s = new int[ids.size(1)];
            for (int t = 0; t < s.length; t++) {
                s[t] = (int) ids.getLong(b, t);
            }
            seqs.add(s);
        }
        return seqs;
    }

    /**
     * dLoss/dLogits [B·T, V] for loss = −Σ adv[b]·logp(ids[b,t+1] | ids[b,:t+1])·mask[b,t+1] / Σ mask[:,1:],
     * with {@code advantages} [B] and {@code completion_mask} [B, T] from {@code ref}.
     */
    static Tensor dLogits(Tensor logits, TestSafetensors ref, List<int[]> seqs) {
        float[] adv = ref.get("advantages").toFloatArray();
        Tensor mask = ref.get("completion_mask");
        int b = seqs.size();
        int t = seqs.get(0).length;
        int v = logits.size(1);
        double denom = 0;
        for (int i = 0; i < b; i++) {
            for (int j = 1; j < t; j++) {
                denom += mask.getFloat(i, j);
            }
        }
        float[] lg = logits.toFloatArray();
        float[] d = new float[lg.length];
        for (int i = 0; i < b; i++) {
            for (int j = 0; j + 1 < t; j++) {
                float c = (float) (adv[i] * mask.getFloat(i, j + 1) / denom);
                int row = (i * t + j) * v;
                float max = Float.NEGATIVE_INFINITY;
                for (int k = 0; k < v; k++) {
                    max = Math.max(max, lg[row + k]);
                }
                double sum = 0;
                for (int k = 0; k < v; k++) {
                    sum += Math.exp(lg[row + k] - max);
                }
                int target = seqs.get(i)[j + 1];
                for (int k = 0; k < v; k++) {
                    float p = (float) (Math.exp(lg[row + k] - max) / sum);
                    d[row + k] = -c * ((k == target ? 1f : 0f) - p);
                }
            }
        }
        return Tensor.of(d, (long) b * t, v);
    }
}
