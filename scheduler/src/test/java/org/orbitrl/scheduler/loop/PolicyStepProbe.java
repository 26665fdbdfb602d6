package org.orbitrl.scheduler.loop;

import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.rl.AdamW;
import org.orbitrl.scheduler.rl.GrpoAdvantage;
import org.orbitrl.scheduler.rl.LossNormalisation;
import org.orbitrl.scheduler.rl.PpoClipLoss;
import org.orbitrl.scheduler.rl.TrainingLoss;

import java.util.List;

/**
 * The RL loop's training step ({@link PolicyTrainer}: training prefill, per-token log-probs at the
 * sampling temperature, the train/rollout gap, GRPO advantages, PPO-clip loss with truncated
 * importance sampling, adapter-only backward, one AdamW step) for benches and tests outside this
 * package, so that they measure the code path a job runs rather than a copy of it.
 */
public final class PolicyStepProbe {

    /**
     * What one step measured.
     *
     * @param gapMean   mean |train - rollout| log-prob over the tokens in the loss
     * @param gapMax    largest |train - rollout| log-prob
     * @param gapExact  tokens whose recomputed log-prob equals the rollout's exactly
     * @param tokens    response tokens in the loss
     */
    public record Step(double loss, double gapMean, double gapMax, long gapExact, long tokens, boolean skipped,
                       String skipReason) {
    }

    private final PolicyTrainer trainer;

    /**
     * A GRPO trainer (PPO-clip 0.2/0.28, token-mean loss, no KL term) of {@code adapter} on {@code model}.
     *
     * @param microBatch  sequences per training prefill
     * @param recompute   activations recomputed in backward
     * @param temperature the sampling temperature the log-probs are recomputed at
     * @param tisCap      truncated importance sampling cap (0: off)
     */
    public PolicyStepProbe(Trainable model, Adapter adapter, AdamW optimizer, int microBatch, boolean recompute,
                           float temperature, double tisCap) {
        this.trainer = new PolicyTrainer(model, adapter, optimizer, GrpoAdvantage.standard(),
                new TrainingLoss(new PpoClipLoss(0.2, 0.28), null), LossNormalisation.TOKEN_MEAN, 1, tisCap, microBatch,
                recompute, temperature);
    }

    /** One optimizer step on {@code samples} (whole groups of {@code groupSize}); returns when it has finished. */
    public Step train(List<SampleRecord> samples, int groupSize) {
        PolicyTrainer.Outcome o = trainer.train(samples, groupSize);
        return new Step(o.loss(), o.gapMean(), o.gapMax(), o.gapExact(), o.tokens(), o.skipped(), o.skipReason());
    }
}
