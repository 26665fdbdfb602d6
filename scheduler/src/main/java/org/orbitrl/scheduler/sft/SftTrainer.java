package org.orbitrl.scheduler.sft;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.scheduler.rl.AdamW;
import org.orbitrl.scheduler.rl.AdamWConfig;
import org.orbitrl.scheduler.rl.LearningRateSchedule;
import org.orbitrl.scheduler.rl.Parameter;
import org.orbitrl.scheduler.rl.StepResult;

import java.util.ArrayList;
import java.util.List;

/**
 * Supervised fine-tuning of an adapter: cross-entropy of each example's completion tokens given
 * its prompt, averaged over the batch's completion tokens; AdamW on the adapter only.
 */
public final class SftTrainer {

    /** A prompt and the completion the model should produce after it (end token included). */
    public record Example(int[] prompt, int[] completion) {
    }

    private final Trainable model;
    private final Adapter adapter;
    private final AdamW optimizer;

    public SftTrainer(Trainable model, Adapter adapter, double lr, double gradClip, TensorAllocator allocator) {
        this.model = model;
        this.adapter = adapter;
        List<Parameter> params = new ArrayList<>();
        for (Adapter.Param p : adapter.params()) {
            params.add(new Parameter(p.name(), p.value()));
        }
        this.optimizer = new AdamW(new AdamWConfig(0.9, 0.999, 1e-8, 0.0, gradClip), new LearningRateSchedule.Constant(lr),
                params, allocator);
    }

    /** One optimizer step on a batch; returns the mean loss per completion token. */
    public double step(List<Example> batch) {
        List<int[]> seqs = new ArrayList<>();
        List<TokenLoss.Target> targets = new ArrayList<>();
        int row = 0;
        for (Example e : batch) {
            int[] s = new int[e.prompt().length + e.completion().length];
            System.arraycopy(e.prompt(), 0, s, 0, e.prompt().length);
            System.arraycopy(e.completion(), 0, s, e.prompt().length, e.completion().length);
            seqs.add(s);
            for (int i = 0; i < e.completion().length; i++) {
                targets.add(new TokenLoss.Target(row + e.prompt().length + i - 1, e.completion()[i]));
            }
            row += s.length;
        }
        Trainable.Tape tape = model.forwardTrain(seqs, false);
        TokenLoss.Result r = TokenLoss.crossEntropy(tape.logits(), targets);
        adapter.zeroGrad();
        model.backward(tape, r.dLogits());
        List<Tensor> grads = new ArrayList<>();
        for (Adapter.Param p : adapter.params()) {
            grads.add(p.grad());
        }
        StepResult res = optimizer.step(r.loss(), grads);
        if (res instanceof StepResult.Skipped s) {
            throw new IllegalStateException("supervised step skipped: " + s);
        }
        return r.loss();
    }
}
