package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.util.List;

/**
 * A decoder-only language model over a frozen base. One call processes a batch of sequences,
 * each contributing its new tokens (a whole prompt at prefill, one token at decode) and its own
 * KV cache; the same code path serves both, so training's prefill and rollout's decode share
 * kernels.
 */
public interface CausalLM extends AutoCloseable {

    /**
     * One sequence's part of a step: new token ids, and its cache (advanced by the call); a null
     * cache means no past and nothing kept (training prefill).
     */
    record Segment(int[] tokens, SequenceCache cache) {
    }

    /** Receives hidden states: index 0 = embeddings, i = after layer i, layers = after the final norm. */
    interface HiddenSink {
        void accept(int index, Tensor hidden);
    }

    Backend backend();

    int vocabSize();

    int layers();

    /**
     * The shape of one token's cached keys and values: what a paged block pool is built for.
     * {@code vHeadDim} 0 means no separate values: they are the leading channels of the keys
     * (multi-head latent attention caches one latent that serves as both).
     */
    record CacheGeometry(int layers, int kvHeads, int headDim, int vHeadDim) {
    }

    CacheGeometry cacheGeometry();

    /**
     * Per layer, the sliding window its attention keeps in positions (a query sees itself and the window - 1 before
     * it), 0 for a layer that sees every position.
     */
    default int[] attentionWindows() {
        return new int[layers()];
    }

    /** The same frozen weights, shared, in a new model with no adapters attached. */
    CausalLM view();

    /** The same frozen weights in a new adapter-free model whose operations run on {@code backend}. */
    CausalLM view(Backend backend);

    /** A fresh, empty cache for one sequence. */
    KvCache newCache(int capacity);

    /**
     * Runs the new tokens of every segment through the model and returns logits
     * [total new tokens, vocab] f32, segments in order. Each cache advances by its segment's length.
     */
    Tensor forward(List<Segment> batch, HiddenSink hidden);

    default Tensor forward(List<Segment> batch) {
        return forward(batch, null);
    }

    /**
     * {@link #forward}'s logits of each segment's last new token only: [segments, vocab] f32, segments in order (the
     * rows a sampler draws from). A model that has it runs the LM head over those rows alone, so that a prefill of many
     * tokens holds a row of logits a sequence, not a row a token; the default takes them from the whole forward.
     */
    default Tensor forwardLast(List<Segment> batch) {
        Tensor all = forward(batch);
        if (all.size(0) == batch.size()) {
            return all;
        }
        Backend b = backend();
        TensorAllocator a = b.allocator();
        Tensor rows = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(lastRows(batch), batch.size()));
        Tensor last = a.allocate(MemoryCategory.LOGITS, DType.F32, batch.size(), all.size(1));
        b.gatherRows(all, rows, last);
        a.release(rows);
        a.release(all);
        return last;
    }

    /**
     * Bytes of frozen base weights this model (this rank) holds, as the memory planner budgets them; -1 where the
     * model does not count them.
     */
    default long heldBaseBytes() {
        return -1;
    }

    /** The row of each segment's last new token among the batch's new tokens, segments in order. */
    static int[] lastRows(List<Segment> batch) {
        int[] rows = new int[batch.size()];
        int end = 0;
        for (int i = 0; i < rows.length; i++) {
            end += batch.get(i).tokens().length;
            rows[i] = end - 1;
        }
        return rows;
    }

    /**
     * The decode-step form of {@link #forward}: a step of {@code batch} rows (padded) over
     * {@code pool}, one token each, whose per-step inputs sit in fixed backend tensors and whose
     * device side issues backend work only, so that it can be captured and replayed
     * ({@link org.orbitrl.kernels.Backend#captureStep}). {@code maxBlocks} is the width of its
     * block tables. Null where the model has no such form.
     */
    default org.orbitrl.model.kv.DecodeStep decodeStep(org.orbitrl.model.kv.BlockPool pool, int batch, int maxBlocks) {
        return decodeStep(pool, null, batch, maxBlocks);
    }

    /**
     * As above, over sequences whose sliding-window layers keep their rows in {@code windowPool} (null: none;
     * {@link org.orbitrl.model.kv.PagedSequence#windowPool}). Null (the default) where the model has no such form.
     */
    default org.orbitrl.model.kv.DecodeStep decodeStep(org.orbitrl.model.kv.BlockPool pool, org.orbitrl.model.kv.BlockPool windowPool,
                                                      int batch, int maxBlocks) {
        return null;
    }

    @Override
    default void close() {
    }
}
