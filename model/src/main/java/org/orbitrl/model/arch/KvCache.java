package org.orbitrl.model.arch;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * The key/value cache of one sequence: per layer, keys [capacity, kvHeads, headDim] and values
 * [capacity, kvHeads, vHeadDim], f32, filled up to {@link #length()}. Grows by doubling. The
 * rollout engine's paged cache replaces this for batched serving; this one serves single
 * sequences, tests and the {@code generate} command.
 *
 * <p>With {@code vHeadDim} 0 no values are stored: the values are the leading channels of the keys
 * (as many as the attention output has), which is how multi-head latent attention caches its latent.
 */
public final class KvCache implements SequenceCache, AutoCloseable {
    private final TensorAllocator allocator;
    private final int layers;
    private final int kvHeads;
    private final int headDim;
    private final int vHeadDim;
    private final Tensor[] keys;
    private final Tensor[] values;
    private int capacity;
    private int length;
    private Attachment attachment;

    public KvCache(TensorAllocator allocator, int layers, int kvHeads, int headDim, int vHeadDim, int initialCapacity) {
        this.allocator = allocator;
        this.layers = layers;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.vHeadDim = vHeadDim;
        this.keys = new Tensor[layers];
        this.values = new Tensor[layers];
        this.capacity = Math.max(1, initialCapacity);
        for (int l = 0; l < layers; l++) {
            keys[l] = allocator.allocate(MemoryCategory.KV_CACHE, DType.F32, capacity, kvHeads, headDim);
            values[l] = vHeadDim == 0 ? null : allocator.allocate(MemoryCategory.KV_CACHE, DType.F32, capacity, kvHeads, vHeadDim);
        }
    }

    @Override
    public int length() {
        return length;
    }

    @Override
    public void reserve(int more) {
        int need = length + more;
        if (need <= capacity) {
            return;
        }
        int cap = Math.max(need, capacity * 2);
        for (int l = 0; l < layers; l++) {
            keys[l] = grow(keys[l], cap, headDim);
            values[l] = vHeadDim == 0 ? null : grow(values[l], cap, vHeadDim);
        }
        capacity = cap;
    }

    private Tensor grow(Tensor old, int cap, int dim) {
        Tensor t = allocator.allocate(MemoryCategory.KV_CACHE, DType.F32, cap, kvHeads, dim);
        if (length > 0) {
            allocator.copy(old.slice(0, 0, length), t.slice(0, 0, length));
        }
        allocator.free(old);   // after the copy in stream order: nothing reads the old rows again
        return t;
    }

    /** Keys of layer {@code layer} for positions [0, upTo): [upTo, kvHeads, headDim]. */
    public Tensor keys(int layer, int upTo) {
        return keys[layer].slice(0, 0, upTo);
    }

    /** Values of layer {@code layer} for positions [0, upTo); with vHeadDim 0, the first {@code dv} key channels. */
    public Tensor values(int layer, int upTo, int dv) {
        return vHeadDim == 0 ? keys(layer, upTo).slice(2, 0, dv) : values[layer].slice(0, 0, upTo);
    }

    public Tensor values(int layer, int upTo) {
        return values(layer, upTo, vHeadDim);
    }

    @Override
    public void write(Backend backend, int layer, Tensor k, Tensor v) {
        int t = k.size(0);
        if (length + t > capacity) {
            throw new IllegalStateException("kv cache: reserve(" + t + ") before writing; capacity " + capacity);
        }
        allocator.copy(k, keys[layer].slice(0, length, length + t));
        if (vHeadDim > 0) {
            allocator.copy(v, values[layer].slice(0, length, length + t));
        }
    }

    @Override
    public void attend(Backend backend, int layer, Tensor q, Tensor out, int queryStart, int upTo, AttentionSpec spec) {
        backend.attention(q, keys(layer, upTo), values(layer, upTo, out.size(2)), out, queryStart, spec);
    }

    @Override
    public void advance(int tokens) {
        length += tokens;
    }

    @Override
    public Attachment attachment() {
        return attachment;
    }

    @Override
    public void attach(Attachment state) {
        this.attachment = state;
    }

    /**
     * Frees the cache: its attachment's state (a model's decode state kept beside it) released, its keys and values
     * freed. The cache is not used afterwards; closing twice does nothing.
     */
    @Override
    public void close() {
        if (attachment != null) {
            attachment.release();
            attachment = null;
        }
        for (int l = 0; l < layers; l++) {
            if (keys[l] != null) {
                allocator.free(keys[l]);
                keys[l] = null;
            }
            if (values[l] != null) {
                allocator.free(values[l]);
                values[l] = null;
            }
        }
        length = 0;
    }

    /** Drops everything after the first {@code newLength} tokens. */
    public void truncate(int newLength) {
        if (newLength < 0 || newLength > length) {
            throw new IllegalArgumentException("truncate to " + newLength + " of " + length);
        }
        length = newLength;
    }
}
