package org.orbitrl.scheduler.rollout;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.SamplingOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.util.List;
import java.util.TreeSet;

/**
 * One engine step's draws on the model's backend: a token for each pick, its policy log-prob (the temperature-scaled
 * softmax over the whole vocabulary, as the trainer recomputes it) and its sampled log-prob (under the filtered
 * distribution drawn from). The sampling op is keyed by the request's seed, the sample and the position, so a draw
 * does not depend on the batch; three small copies come back to the host.
 *
 * @param tokens  the drawn token of each pick
 * @param policy  its policy log-prob
 * @param sampled its sampled log-prob
 */
record TokenDraws(int[] tokens, float[] policy, float[] sampled) {

    /** What one draw reads: its request's sampling, the sample's index, the token's position and its logits row. */
    record Pick(SamplingParams params, int sample, int position, int row) {
    }

    static final TokenDraws NONE = new TokenDraws(new int[0], new float[0], new float[0]);

    /** Draws each of {@code picks} from its row of {@code logits} [rows, vocab] on {@code b}. */
    static TokenDraws of(Backend b, Tensor logits, List<Pick> picks) {
        TensorAllocator a = b.allocator();
        int n = picks.size();
        Tensor req = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I32, SamplingOps.FIELDS, n); // i32 [FIELDS, n]
        TreeSet<Float> temperatures = new TreeSet<>();
        for (int i = 0; i < n; i++) {
            Pick k = picks.get(i);
            SamplingParams p = k.params();
            SamplingOps.setRequest(req, i, k.row(), p.greedy() ? 0f : p.temperature(), p.topK(), p.topP(), p.minP(),
                    SamplingOps.streamKey(p.seed(), k.sample(), k.position()));
            temperatures.add(p.temperature());
        }
        Tensor reqDev = a.upload(MemoryCategory.ACTIVATIONS, req);
        Tensor tokens = a.allocate(MemoryCategory.ACTIVATIONS, DType.I32, n);   // i32 [n]
        Tensor sampled = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n);  // f32 [n]
        b.sampleTokens(logits, reqDev, tokens, sampled);
        Tensor rowIds = reqDev.select(0, SamplingOps.ROW);                      // i32 [n]
        float[] policy = new float[n];
        for (float t : temperatures) {   // one op a temperature of the step's requests
            Tensor lp = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n);   // f32 [n]
            b.tokenLogProbs(logits, rowIds, tokens, t, lp);
            float[] h = a.toHost(lp).toFloatArray();   // device->host copy
            a.release(lp);
            for (int i = 0; i < n; i++) {
                if (picks.get(i).params().temperature() == t) {
                    policy[i] = h[i];
                }
            }
        }
        Tensor tokHost = a.toHost(tokens);                 // device->host copy
        int[] tok = new int[n];
        for (int i = 0; i < n; i++) {
            tok[i] = (int) tokHost.getLong(i);
        }
        float[] sampledHost = a.toHost(sampled).toFloatArray();   // device->host copy
        a.release(tokens);
        a.release(sampled);
        if (reqDev != req) {
            a.release(reqDev);
        }
        return new TokenDraws(tok, policy, sampledHost);
    }
}
