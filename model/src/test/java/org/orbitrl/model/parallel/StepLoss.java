package org.orbitrl.model.parallel;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.TestSafetensors;

import java.util.List;

/**
 * The fixtures' policy-gradient loss, loss = −Σ adv[b]·logp(ids[b,t+1] | ids[b,:t+1])·mask[b,t+1] / denom,
 * over a subset of the fixture's rows, with the denominator given (Σ mask[:,1:] of the whole batch,
 * so data-parallel ranks' losses and gradients add up to the whole batch's).
 */
final class StepLoss {
    final double loss;
    final Tensor dLogits;   // [rows·T, V]

    private StepLoss(double loss, Tensor dLogits) {
        this.loss = loss;
        this.dLogits = dLogits;
    }

    static double denominator(TestSafetensors ref, int rows, int t) {
        Tensor mask = ref.get("completion_mask");
        double denom = 0;
        for (int i = 0; i < rows; i++) {
            for (int j = 1; j < t; j++) {
                denom += mask.getFloat(i, j);
            }
        }
        return denom;
    }

    /** The loss over fixture rows {@code first..first+seqs.size()-1}. */
    static StepLoss of(Tensor logits, TestSafetensors ref, List<int[]> seqs, int first, double denom) {
        float[] adv = ref.get("advantages").toFloatArray();
        Tensor mask = ref.get("completion_mask");
        int t = seqs.get(0).length;
        int v = logits.size(1);
        float[] lg = logits.toFloatArray();
        float[] d = new float[lg.length];
        double loss = 0;
        for (int i = 0; i < seqs.size(); i++) {
            int row = first + i;
            for (int j = 0; j + 1 < t; j++) {
                double c = adv[row] * mask.getFloat(row, j + 1) / denom;
                int at = (i * t + j) * v;
                double max = Double.NEGATIVE_INFINITY;
                for (int k = 0; k < v; k++) {
                    max = Math.max(max, lg[at + k]);
                }
                double sum = 0;
                for (int k = 0; k < v; k++) {
                    sum += Math.exp(lg[at + k] - max);
                }
                int target = seqs.get(i)[j + 1];
                loss -= c * (lg[at + target] - max - Math.log(sum));
                for (int k = 0; k < v; k++) {
                    double p = Math.exp(lg[at + k] - max) / sum;
                    d[at + k] = (float) (-c * ((k == target ? 1 : 0) - p));
                }
            }
        }
        return new StepLoss(loss, Tensor.of(d, (long) seqs.size() * t, v));
    }
}
