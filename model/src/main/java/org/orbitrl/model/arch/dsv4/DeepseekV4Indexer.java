package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.model.nn.Linear;

/**
 * The lightning indexer of a compressed-sparse layer: its own compressor at
 * {@code index_head_dim} keys the compressed windows; queries {@code wq_b(q_residual)} rotated at
 * the token positions score each causally closed entry as
 * {@code Σ_h w_{t,h} · relu(q_{t,h}·k_s) · index_head_dim^-½}, {@code w = weights_proj(x) · heads^-½},
 * and each query keeps the top {@code index_topk}. The choice is discrete: nothing here is
 * differentiated.
 */
final class DeepseekV4Indexer {
    final DeepseekV4Compressor compressor;
    final Linear qB;           // [heads*dim, qLoraRank]
    final Linear weightsProj;  // [heads, hidden]
    private final int heads;
    private final int dim;
    private final int topK;

    DeepseekV4Indexer(DeepseekV4Compressor compressor, Linear qB, Linear weightsProj, int heads, int dim, int topK) {
        this.compressor = compressor;
        this.qB = qB;
        this.weightsProj = weightsProj;
        this.heads = heads;
        this.dim = dim;
        this.topK = topK;
    }

    DeepseekV4Indexer view() {
        return new DeepseekV4Indexer(compressor.view(), qB.view(), weightsProj.view(), heads, dim, topK);
    }

    /** Per row of the batch, the chosen compressed-entry indices (at most top-k, all causally closed). */
    int[][] select(Backend b, Node x, Node qr, int[] positions, DeepseekV4Attention.Seg[] segs, int rate,
                   DeepseekV4Config c) {
        int n = positions.length;
        // no tape: nothing here is recorded for backward, and x and qr keep the device copies their other readers made
        Node[] proj = compressor.project(null, b, x, n);
        Node q = Ops.linear(null, b, qB, qr, n);                       // [N, heads*dim]
        float[][] cs = DeepseekV4Config.cosSin(c.compressRope(), positions);
        q = Ops.rope(null, q, heads, dim, cs[0], cs[1], false);
        Node w = Ops.linear(null, b, weightsProj, x, n);               // [N, heads]
        float qScale = (float) (1 / Math.sqrt(dim));
        float wScale = (float) (1 / Math.sqrt(heads));
        int[][] out = new int[n][];
        int width = compressor.width();
        for (DeepseekV4Attention.Seg s : segs) {
            Node keys = compressor.compress(null, Ops.rows(null, proj[0], width, s.start(), s.len()),
                    Ops.rows(null, proj[1], width, s.start(), s.len()), s.state() == null ? null : s.state().index,
                    c.compressRope());
            int m = keys.size() / dim;
            for (int i = 0; i < s.len(); i++) {
                int row = s.start() + i;
                int closed = Math.min(m, (positions[row] + 1) / rate);
                float[] score = new float[m];                 // [M], not yet closed entries -inf
                java.util.Arrays.fill(score, Float.NEGATIVE_INFINITY);
                for (int e = 0; e < closed; e++) {
                    float acc = 0;
                    for (int h = 0; h < heads; h++) {
                        float dot = 0;
                        for (int k = 0; k < dim; k++) {
                            dot += q.v[(row * heads + h) * dim + k] * keys.v[e * dim + k];
                        }
                        acc += Math.max(dot, 0f) * qScale * (w.v[row * heads + h] * wScale);
                    }
                    score[e] = acc;
                }
                int[] chosen = DeepseekV4TopK.select(score, Math.min(topK, m));
                int[] pick = java.util.Arrays.stream(chosen).filter(e -> e < closed).toArray();
                out[row] = pick;
            }
        }
        return out;
    }
}
