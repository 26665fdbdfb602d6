package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.arch.SequenceCache;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.ModelSpec;

/**
 * One sequence's DeepSeek V4 decode state, attached to its {@link SequenceCache}: per layer the sliding window's K=V
 * rows, each compressor's open window, overlap and emitted entries and the indexer's keys ({@link
 * DeepseekV4Attention.State}), and the tokens they cover. Its values are in {@code allocator}'s memory (a device's on a device backend, where they
 * stay between steps); a fork copies them there, and a closed sequence releases them with its cache. The bytes it holds
 * at a length are what the memory planner budgets for V4 rollout ({@link #bytes}).
 */
final class DeepseekV4DecodeState implements SequenceCache.Attachment {
    int length;
    final DeepseekV4Attention.State[] layers;
    private final TensorAllocator allocator;

    DeepseekV4DecodeState(int n, TensorAllocator allocator) {
        this.allocator = allocator;
        layers = new DeepseekV4Attention.State[n];
        for (int i = 0; i < n; i++) {
            layers[i] = new DeepseekV4Attention.State();
        }
    }

    @Override
    public DeepseekV4DecodeState copy() {
        DeepseekV4DecodeState c = new DeepseekV4DecodeState(layers.length, allocator);
        c.length = length;
        for (int i = 0; i < layers.length; i++) {
            layers[i].copyInto(c.layers[i], allocator);
        }
        return c;
    }

    @Override
    public void release() {
        for (DeepseekV4Attention.State s : layers) {
            s.release(allocator);
        }
    }

    /** The state attached to {@code cache}, or null for a cache no DeepSeek V4 model has run. */
    static DeepseekV4DecodeState of(SequenceCache cache) {
        return cache.attachment() instanceof DeepseekV4DecodeState s ? s : null;
    }

    /** Bytes (f32) it holds in layer {@code layer}: the window's rows, the compressors' entries and open windows. */
    long stateBytes(int layer) {
        DeepseekV4Attention.State s = layers[layer];
        long floats = s.window == null ? 0 : s.window.floats();
        return 4 * (floats + s.comp.floats() + s.index.floats());
    }

    /** Bytes (f32) of its compressed entries (pooled KV and indexer keys) in layer {@code layer}. */
    long entryBytes(int layer) {
        DeepseekV4Attention.State s = layers[layer];
        return 4L * (s.comp.entryFloats() + s.index.entryFloats());
    }

    /** See {@link DeepseekV4Model#decodeStateBytes}. */
    static long bytes(ModelSpec spec, long tokens) {
        if (tokens <= 0) {
            return 0;
        }
        org.orbitrl.model.spec.DeepseekV4Spec v = spec.deepseekV4();
        if (v == null) {
            throw new IllegalArgumentException("decode state bytes of a model that is not DeepSeek V4: " + spec.modelType());
        }
        long d = spec.headDim();
        long floats = 0;
        for (int l = 0; l < spec.numLayers(); l++) {
            AttentionKind kind = spec.attentionKind(l);
            floats += spec.slidingWindow() > 1 ? (long) (spec.slidingWindow() - 1 + StateRows.WINDOW_SLACK) * d : 0;
            int rate = v.compressRate(kind);
            if (rate > 0) {
                boolean csa = kind == AttentionKind.COMPRESSED_SPARSE;
                floats += compressorFloats(rate, csa ? 2 * d : d, d, tokens);
                if (csa) {
                    long id = v.indexHeadDim();
                    floats += compressorFloats(rate, 2 * id, id, tokens);
                }
            }
        }
        return 4 * floats;
    }

    private static long compressorFloats(int rate, long width, long dim, long tokens) {
        long entries = tokens / rate;
        return 2L * rate * width + (entries == 0 ? 0 : StateRows.capacityFor(DeepseekV4Compressor.ENTRIES_FIRST, entries) * dim);
    }
}
