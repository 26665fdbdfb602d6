package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.rl.AdamW;
import org.orbitrl.scheduler.rl.AdvantageEstimator;
import org.orbitrl.scheduler.rl.Groups;
import org.orbitrl.scheduler.rl.LossNormalisation;
import org.orbitrl.scheduler.rl.LossResult;
import org.orbitrl.scheduler.rl.MismatchCorrection;
import org.orbitrl.scheduler.rl.Normaliser;
import org.orbitrl.scheduler.rl.PolicyBatch;
import org.orbitrl.scheduler.rl.StepResult;
import org.orbitrl.scheduler.rl.TrainingLoss;
import org.orbitrl.scheduler.rl.TruncatedImportanceSampling;

import java.util.ArrayList;
import java.util.List;

/**
 * The trainer's half of a step: from logged samples to one optimizer step on the adapter.
 * Advantages per group; log-probs of every response token recomputed in training prefills with
 * the same base and kernels as rollout (the gap to rollout's is measured); the loss (policy term,
 * truncated importance sampling of train/rollout mismatch, KL to the base with the adapter off);
 * backward to adapter gradients, accumulated over micro-batches with one normaliser for the whole
 * batch; one AdamW step (skipped, and reported, on a non-finite loss or gradient).
 */
final class PolicyTrainer {

    /** What one training step measured. */
    record Outcome(double loss, double gapMean, double gapMax, long gapExact, long tokens, double gradNorm, double lr,
                   double klMean, double clipFraction, boolean skipped, String skipReason) {
    }

    private final Trainable model;
    private final Adapter adapter;
    private final AdamW optimizer;
    private final AdvantageEstimator advantages;
    private final TrainingLoss loss;
    private final LossNormalisation normalisation;
    private final double fixedConstant;
    private final double tisCap;
    private final boolean needReference;
    private final int microBatch;
    private final boolean recompute;
    private float temperature;

    PolicyTrainer(Trainable model, Adapter adapter, AdamW optimizer, AdvantageEstimator advantages, TrainingLoss loss,
                  LossNormalisation normalisation, double fixedConstant, double tisCap, int microBatch, boolean recompute,
                  float temperature) {
        this.model = model;
        this.adapter = adapter;
        this.optimizer = optimizer;
        this.advantages = advantages;
        this.loss = loss;
        this.normalisation = normalisation;
        this.fixedConstant = fixedConstant;
        this.tisCap = tisCap;
        this.needReference = loss.kl() != null && loss.kl().coefficient() > 0;
        this.microBatch = microBatch;
        this.recompute = recompute;
        this.temperature = temperature;
    }

    // after backward, before the optimizer: the gradients completed over other ranks (expert parallelism's sums, the
    // data-parallel trainers' all-reduce); from this trainer's loss sum, the batch's, which the optimizer checks
    private java.util.function.DoubleUnaryOperator completeGradients = loss -> loss;

    /**
     * Runs {@code c} once the adapter's gradients are accumulated and before the optimizer reads them; it completes them
     * over the other ranks and returns, from this trainer's loss sum, the loss of the whole batch.
     */
    void completeGradientsWith(java.util.function.DoubleUnaryOperator c) {
        this.completeGradients = c;
    }

    void setTemperature(float t) {
        this.temperature = t;
    }

    AdamW optimizer() {
        return optimizer;
    }

    /** One optimizer step on these samples (whole groups). */
    Outcome train(List<SampleRecord> samples, int groupSize) {
        return train(samples, groupSize, null);
    }

    /**
     * The loss normaliser of a whole batch: its constant, or its masked tokens or sequences counted (a data-parallel
     * trainer's share is normalised as part of the batch, so that the shares' gradients sum to the batch's).
     */
    Normaliser normaliser(List<SampleRecord> samples) {
        int n = samples.size();
        int width = width(samples);
        float[] mask = new float[n * width];
        for (int i = 0; i < n; i++) {
            SampleRecord s = samples.get(i);
            for (int t = 0; t < s.responseLength(); t++) {
                mask[i * width + t] = s.inLoss(t) ? 1f : 0f;
            }
        }
        float[] zeros = new float[n * width];
        return Normaliser.over(normalisation, fixedConstant, PolicyBatch.of(n, width, zeros, zeros, zeros, mask));
    }

    private static int width(List<SampleRecord> samples) {
        int width = 1;
        for (SampleRecord s : samples) {
            width = Math.max(width, s.responseLength());
        }
        return width;
    }

    /**
     * One optimizer step on these samples (whole groups, possibly none: a data-parallel trainer's empty share still
     * takes its part in the gradients' completion and the step), normalised by {@code norm}: the whole batch's, or null
     * where these samples are the whole batch.
     */
    Outcome train(List<SampleRecord> samples, int groupSize, Normaliser norm) {
        int n = samples.size();
        int width = width(samples);
        // advantages: explicit groups, a ragged group is an error
        long[] groupIds = new long[n];
        float[] rewards = new float[n];
        for (int i = 0; i < n; i++) {
            groupIds[i] = samples.get(i).groupId();
            rewards[i] = (float) samples.get(i).reward();
        }
        float[] seqAdv = n == 0 ? new float[0] : advantages.compute(rewards, Groups.ofSize(groupIds, groupSize));
        float[] mask = new float[n * width];       // [sequences, width]
        float[] rollout = new float[n * width];
        float[] adv = new float[n * width];
        for (int i = 0; i < n; i++) {
            SampleRecord s = samples.get(i);
            for (int t = 0; t < s.responseLength(); t++) {
                mask[i * width + t] = s.inLoss(t) ? 1f : 0f;
                rollout[i * width + t] = s.rolloutLogprob(t);
                adv[i * width + t] = seqAdv[i];
            }
        }
        if (norm == null) {
            norm = Normaliser.over(normalisation, fixedConstant, PolicyBatch.of(n, width, rollout, rollout, adv, mask));
        }

        adapter.zeroGrad();
        adapter.prepare(model.backend());   // the values hold until the optimizer step: OFT builds its rotations once
        try {
            return trainMicroBatches(samples, n, width, mask, rollout, adv, norm);
        } finally {
            adapter.unprepare();
        }
    }

    private Outcome trainMicroBatches(List<SampleRecord> samples, int n, int width, float[] mask, float[] rollout, float[] adv,
                                      Normaliser norm) {
        double lossSum = 0;
        double gapSum = 0;
        double gapMax = 0;
        long gapExact = 0;
        long tokens = 0;
        double klSum = 0;
        double clipped = 0;
        for (int from = 0; from < n; from += microBatch) {
            int to = Math.min(n, from + microBatch);
            List<SampleRecord> mb = samples.subList(from, to);
            float[] ref = needReference ? referenceLogprobs(mb, width) : null;
            List<int[]> seqs = new ArrayList<>();
            for (SampleRecord s : mb) {
                seqs.add(concat(s.promptTokens(), s.responseTokens()));
            }
            Trainable.Tape tape = model.forwardTrain(seqs, recompute);                 // training prefill, same kernels
            Tensor logits = tape.logits();                                            // [tokens, vocab], backend memory
            int rows = mb.size();
            ResponseTokens picks = ResponseTokens.of(mb, width);
            float[] logp = picks.logProbs(model.backend(), logits, temperature);     // [rows, width]
            for (int i = 0; i < rows; i++) {
                SampleRecord s = mb.get(i);
                for (int t = 0; t < s.responseLength(); t++) {
                    if (s.inLoss(t)) {
                        double d = Math.abs(logp[i * width + t] - s.rolloutLogprob(t));   // train/rollout gap
                        gapSum += d;
                        gapMax = Math.max(gapMax, d);
                        gapExact += d == 0 ? 1 : 0;
                        tokens++;
                    }
                }
            }
            float[] mbMask = java.util.Arrays.copyOfRange(mask, from * width, to * width);
            float[] mbRollout = java.util.Arrays.copyOfRange(rollout, from * width, to * width);
            float[] mbAdv = java.util.Arrays.copyOfRange(adv, from * width, to * width);
            PolicyBatch b = PolicyBatch.of(rows, width, logp, logp.clone(), mbAdv, mbMask);   // one update: old = current
            if (tisCap > 0) {
                MismatchCorrection c = new TruncatedImportanceSampling(tisCap, org.orbitrl.scheduler.rl.MismatchLevel.TOKEN)
                        .apply(logp, mbRollout, mbMask, rows, width);
                b = b.withCorrection(c);
            }
            if (ref != null) {
                b = b.withRefLogp(ref);
            }
            LossResult lr = loss.compute(b, norm);
            lossSum += lr.loss();
            klSum += lr.stats().klSum();
            clipped += lr.stats().clippedLow() + lr.stats().clippedHigh();
            Tensor dLogits = picks.logitGradient(model.backend(), logits, lr.grad(), temperature);
            model.backward(tape, dLogits);                                             // adapter gradients only
            model.backend().allocator().release(dLogits);                              // [tokens, vocab] each: freed
            model.backend().allocator().release(logits);                               // now, not at the next collection
            tape.release(model.backend().allocator());                                 // the layer inputs [tokens, hidden] each
        }
        adapter.unprepare();                                                          // the optimizer writes the values
        double batchLoss = completeGradients.applyAsDouble(lossSum);
        List<Tensor> grads = new ArrayList<>();
        for (Adapter.Param p : adapter.params()) {
            grads.add(p.grad());
        }
        StepResult r = optimizer.step(batchLoss, grads);
        double gapMean = tokens == 0 ? 0 : gapSum / tokens;
        if (r instanceof StepResult.Applied a) {
            return new Outcome(lossSum, gapMean, gapMax, gapExact, tokens, a.gradNorm(), a.learningRate(), klSum,
                    tokens == 0 ? 0 : clipped / tokens, false, null);
        }
        StepResult.Skipped s = (StepResult.Skipped) r;
        return new Outcome(lossSum, gapMean, gapMax, gapExact, tokens, Double.NaN, Double.NaN, klSum, 0, true,
                String.valueOf(s.offender()));
    }

    /** Log-probs of the response tokens under the base alone (the adapter switched off): the KL reference. */
    private float[] referenceLogprobs(List<SampleRecord> mb, int width) {
        List<org.orbitrl.model.arch.CausalLM.Segment> segs = new ArrayList<>();
        for (SampleRecord s : mb) {
            segs.add(new org.orbitrl.model.arch.CausalLM.Segment(concat(s.promptTokens(), s.responseTokens()), null));
        }
        adapter.setEnabled(false);
        Tensor logits;
        try {
            logits = model.forward(segs);
        } finally {
            adapter.setEnabled(true);
        }
        float[] logp = ResponseTokens.of(mb, width).logProbs(model.backend(), logits, temperature);
        model.backend().allocator().release(logits);
        return logp;
    }

    static int[] concat(int[] a, int[] b) {
        int[] out = new int[a.length + b.length];
        System.arraycopy(a, 0, out, 0, a.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
