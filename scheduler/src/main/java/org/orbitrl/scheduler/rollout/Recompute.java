package org.orbitrl.scheduler.rollout;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.nn.LogProbs;

import java.util.ArrayList;
import java.util.List;

/**
 * The training side of precision alignment: recomputes the log-probabilities of generated tokens
 * in one prefill per batch, with the same weights and kernels as rollout, and measures the gap to
 * what rollout recorded.
 */
public final class Recompute {
    private Recompute() {
    }

    /** The train/rollout log-prob gap over a batch: mean and max |Δ| per token, and how many were exactly equal. */
    public record Gap(double meanAbs, double maxAbs, long tokens, long exactlyEqual) {
        public boolean exact() {
            return exactlyEqual == tokens;
        }
    }

    /** Per completion, the recomputed policy log-prob of each generated token at {@code temperature}. */
    public static List<float[]> policyLogprobs(CausalLM model, List<Completion> completions, float temperature) {
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (Completion c : completions) {
            int[] seq = new int[c.prompt().length + c.tokens().length];
            System.arraycopy(c.prompt(), 0, seq, 0, c.prompt().length);
            System.arraycopy(c.tokens(), 0, seq, c.prompt().length, c.tokens().length);
            batch.add(new CausalLM.Segment(seq, null));
        }
        Tensor logits = model.forward(batch);    // [total tokens, vocab]
        float[] all = model.backend().allocator().toHost(logits).toFloatArray(); // a copy when the logits are on a device
        int v = model.vocabSize();
        List<float[]> out = new ArrayList<>();
        int row = 0;
        for (Completion c : completions) {
            int p = c.prompt().length;
            float[] lp = new float[c.tokens().length];
            for (int i = 0; i < lp.length; i++) {
                // token i was predicted from position p + i - 1
                lp[i] = LogProbs.of(all, (row + p + i - 1) * v, v, c.tokens()[i], temperature);
            }
            out.add(lp);
            row += p + c.tokens().length;
        }
        return out;
    }

    public static Gap gap(List<Completion> completions, List<float[]> recomputed) {
        double sum = 0;
        double max = 0;
        long n = 0;
        long equal = 0;
        for (int i = 0; i < completions.size(); i++) {
            float[] a = completions.get(i).policyLogprobs();
            float[] b = recomputed.get(i);
            for (int t = 0; t < a.length; t++) {
                double d = Math.abs(a[t] - b[t]);
                sum += d;
                max = Math.max(max, d);
                n++;
                if (Float.floatToIntBits(a[t]) == Float.floatToIntBits(b[t])) {
                    equal++;
                }
            }
        }
        return new Gap(n == 0 ? 0 : sum / n, max, n, equal);
    }
}
