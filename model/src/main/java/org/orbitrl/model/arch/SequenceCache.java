package org.orbitrl.model.arch;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;

/**
 * The cached keys and values of one sequence, however they are stored (one contiguous buffer,
 * or blocks of a shared paged pool). A forward step reserves room for its new tokens, writes
 * each layer's keys and values, attends, and advances the length once all layers are done.
 */
public interface SequenceCache {

    /** Tokens cached so far: the position of the next token. */
    int length();

    /** Makes room for {@code tokens} more positions (and makes them private to this sequence). */
    void reserve(int tokens);

    /**
     * Writes k [T, kvHeads, headDim] and v [T, kvHeads, vHeadDim] (f32; v null when values are the keys' leading
     * channels) at positions [length, length+T) of {@code layer}; a cache that stores another dtype converts through
     * {@code backend}.
     */
    void write(Backend backend, int layer, Tensor k, Tensor v);

    /**
     * Causal attention of q [T, Hq, D] (queries at positions [queryStart, queryStart+T)) over the
     * cached positions [0, upTo) of {@code layer}, into out [T, Hq, Dv].
     */
    void attend(Backend backend, int layer, Tensor q, Tensor out, int queryStart, int upTo, AttentionSpec spec);

    /** Advances the length after every layer has written. */
    void advance(int tokens);

    /**
     * Per-sequence state a model keeps beside the cached keys and values (DeepSeek V4: the
     * compressors' open windows and entries); a fork of the sequence gets its own copy.
     */
    interface Attachment {
        Attachment copy();

        /** Gives back the memory the state holds (its sequence is done); the default: none to give. */
        default void release() {
        }
    }

    /** The model state attached to this sequence, or null. */
    default Attachment attachment() {
        return null;
    }

    /** Attaches model state to this sequence; a cache that cannot hold any throws. */
    default void attach(Attachment state) {
        throw new UnsupportedOperationException(getClass().getSimpleName() + " cannot hold per-sequence model state");
    }
}
