package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.scheduler.log.SampleRecord;

import java.util.List;

/**
 * The response tokens of a micro-batch laid over its packed training logits: for every response
 * token, the logits row that predicts it (the row of the token before it) and its id. Log-probs
 * and their gradient are computed by the backend where the logits are
 * ({@link Backend#tokenLogProbs}, {@link Backend#tokenLogProbsBackward}); only the per-token
 * values cross to the host.
 */
final class ResponseTokens {
    private final int sequences;
    private final int width;
    private final int[] slot;   // [n] index i*width + t of each response token
    private final int[] rows;   // [n] logits row predicting it
    private final int[] tokens; // [n] the token

    private ResponseTokens(int sequences, int width, int[] slot, int[] rows, int[] tokens) {
        this.sequences = sequences;
        this.width = width;
        this.slot = slot;
        this.rows = rows;
        this.tokens = tokens;
    }

    /** The response tokens of {@code mb}, whose sequences (prompt + response) were packed in order. */
    static ResponseTokens of(List<SampleRecord> mb, int width) {
        int n = 0;
        for (SampleRecord s : mb) {
            n += s.responseLength();
        }
        int[] slot = new int[n];
        int[] rows = new int[n];
        int[] tokens = new int[n];
        int k = 0;
        int base = 0;
        for (int i = 0; i < mb.size(); i++) {
            SampleRecord s = mb.get(i);
            int p = s.promptTokens().length;
            for (int t = 0; t < s.responseLength(); t++) {
                slot[k] = i * width + t;
                rows[k] = base + p + t - 1;
                tokens[k++] = s.responseToken(t);
            }
            base += p + s.responseLength();
        }
        return new ResponseTokens(mb.size(), width, slot, rows, tokens);
    }

    /** log p(token | its row) at {@code temperature}, laid out [sequences, width] (0 past a response's end). */
    float[] logProbs(Backend b, Tensor logits, float temperature) {
        TensorAllocator a = b.allocator();
        int n = rows.length;
        Tensor out = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n);                           // [n]
        Tensor r = upload(a, rows);                                                                  // i32 [n]
        Tensor tk = upload(a, tokens);                                                               // i32 [n]
        b.tokenLogProbs(logits, r, tk, temperature, out);
        float[] values = a.toHost(out).toFloatArray();
        a.release(r);
        a.release(tk);
        a.release(out);
        float[] logp = new float[sequences * width];
        for (int k = 0; k < n; k++) {
            logp[slot[k]] = values[k];
        }
        return logp;
    }

    /** d loss / d logits [rows, vocab] in the backend's memory, from d loss / d logp laid out [sequences, width]. */
    Tensor logitGradient(Backend b, Tensor logits, float[] dLogp, float temperature) {
        TensorAllocator a = b.allocator();
        int n = rows.length;
        float[] g = new float[n];
        for (int k = 0; k < n; k++) {
            g[k] = dLogp[slot[k]];
        }
        Tensor d = a.allocate(MemoryCategory.LOGITS, DType.F32, logits.shape());                    // [rows, vocab], zero
        Tensor r = upload(a, rows);                                                                  // i32 [n]
        Tensor tk = upload(a, tokens);                                                               // i32 [n]
        Tensor gDev = a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(g, n));                         // [n]
        b.tokenLogProbsBackward(logits, r, tk, gDev, temperature, d);
        a.release(r);
        a.release(tk);
        a.release(gDev);
        return d;
    }

    private static Tensor upload(TensorAllocator a, int[] values) {
        return a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(values, values.length));
    }
}
