package org.orbitrl.scheduler.bench;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.arch.Trainable;

import java.util.List;

/**
 * Mean next-token cross-entropy over a batch of sequences, forward and adapter-only backward, with
 * the backend's policy log-prob kernels: every position but each sequence's last predicts the next token.
 */
public final class NextTokenLoss {
    private NextTokenLoss() {
    }

    /** One forward ({@code recompute}: activations recomputed in backward) and backward; returns the loss (its log-probs are read back, so the forward has finished). */
    public static double forwardBackward(Trainable model, Backend backend, List<int[]> seqs, boolean recompute) {
        TensorAllocator a = backend.allocator();
        int n = 0;
        for (int[] s : seqs) {
            n += s.length - 1;
        }
        int[] rows = new int[n];     // [n] row of the logits that predicts
        int[] tokens = new int[n];   // [n] the token it predicts
        int k = 0;
        int base = 0;
        for (int[] s : seqs) {
            for (int t = 0; t + 1 < s.length; t++) {
                rows[k] = base + t;
                tokens[k++] = s[t + 1];
            }
            base += s.length;
        }
        Trainable.Tape tape = model.forwardTrain(seqs, recompute);
        Tensor logits = tape.logits();                                                        // [tokens, vocab]
        Tensor r = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(rows, n));              // [n]
        Tensor tk = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(tokens, n));           // [n]
        Tensor logp = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n);                   // [n]
        backend.tokenLogProbs(logits, r, tk, 1f, logp);
        float[] lp = a.toHost(logp).toFloatArray();
        a.release(logp);
        double loss = 0;
        for (float v : lp) {
            loss -= v;
        }
        float[] g = new float[n];
        java.util.Arrays.fill(g, -1f / n);
        Tensor dLogits = a.allocate(MemoryCategory.LOGITS, DType.F32, logits.shape());        // [tokens, vocab], zero
        Tensor dLogp = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(g, n));                 // [n]
        backend.tokenLogProbsBackward(logits, r, tk, dLogp, 1f, dLogits);
        a.release(r);
        a.release(tk);
        a.release(dLogp);
        model.backward(tape, dLogits);
        a.release(dLogits);
        tape.release(a);   // the logits and the layer inputs
        return loss / n;
    }
}
