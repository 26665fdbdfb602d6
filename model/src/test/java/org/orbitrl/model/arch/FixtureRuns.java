package org.orbitrl.model.arch;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.TestSafetensors;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * The runs of a fixture model that the fixture tests share, on any backend (device results are
 * read through the model's allocator): the reference's input rows, greedy decoding through a
 * cache, and batched decoding through caches in steps.
 */
public final class FixtureRuns {
    private FixtureRuns() {
    }

    /** The reference's token rows, from {@code input_ids} [B, T] i64. */
    public static List<int[]> inputRows(TestSafetensors ref) {
        return inputRows(ref.get("input_ids"));
    }

    /** Token rows of {@code ids} [B, T] (integers). */
    public static List<int[]> inputRows(Tensor ids) {
        List<int[]> rows = new ArrayList<>();
        for (int i = 0; i < ids.size(0); i++) {
            int[] toks = new int[ids.size(1)];
            for (int j = 0; j < toks.length; j++) {
                toks[j] = (int) ids.getLong(i, j);
            }
            rows.add(toks);
        }
        return rows;
    }

    /** {@code t}'s values on the host. */
    public static float[] host(CausalLM model, Tensor t) {
        return model.backend().allocator().toHost(t).toFloatArray();
    }

    /**
     * Greedy decoding from {@code prompt} through {@code cache} (the prompt in one prefill, then one
     * token a step) until the sequence holds {@code length} tokens; returns the whole sequence.
     */
    public static long[] greedy(CausalLM model, long[] prompt, int length, SequenceCache cache) {
        int[] next = new int[prompt.length];
        List<Long> got = new ArrayList<>();
        for (int i = 0; i < prompt.length; i++) {
            next[i] = (int) prompt[i];
            got.add(prompt[i]);
        }
        while (got.size() < length) {
            Tensor logits = model.forward(List.of(new CausalLM.Segment(next, cache)));
            float[] last = host(model, logits.select(0, logits.dim(0) - 1));
            int best = 0;
            for (int v = 1; v < last.length; v++) {
                if (last[v] > last[best]) {
                    best = v;
                }
            }
            got.add((long) best);
            next = new int[]{best};
        }
        return got.stream().mapToLong(Long::longValue).toArray();
    }

    /**
     * All rows batched, row b through {@code caches[b]}: a prefill of the first {@code prefill}
     * tokens, then one token a step. Returns each row's logits [T·V] in token order.
     */
    public static float[][] decodeInSteps(CausalLM model, List<int[]> rows, List<? extends SequenceCache> caches, int prefill) {
        int t = rows.get(0).length;
        int v = model.vocabSize();
        float[][] got = new float[rows.size()][t * v];
        for (int j = 0; j < t; j = j == 0 ? prefill : j + 1) {
            int len = j == 0 ? prefill : 1;
            List<CausalLM.Segment> batch = new ArrayList<>();
            for (int b = 0; b < rows.size(); b++) {
                batch.add(new CausalLM.Segment(Arrays.copyOfRange(rows.get(b), j, j + len), caches.get(b)));
            }
            float[] lg = host(model, model.forward(batch)); // [B*len, V]
            for (int b = 0; b < rows.size(); b++) {
                System.arraycopy(lg, b * len * v, got[b], j * v, len * v);
            }
        }
        return got;
    }

    /** Row b of the reference logits [B, T, V] as [T·V]. */
    public static float[] row(float[] logits, int b, int t, int v) {
        return Arrays.copyOfRange(logits, b * t * v, (b + 1) * t * v);
    }
}
