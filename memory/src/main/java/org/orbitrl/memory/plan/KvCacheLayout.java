package org.orbitrl.memory.plan;

import org.orbitrl.kernels.DType;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.DeepseekV4Spec;
import org.orbitrl.model.spec.ModelSpec;

/**
 * What the rollout KV cache holds per layer, in bytes. The planner sizes the cache with these
 * methods and the rollout engine's allocator must use the same ones, so the two agree.
 *
 * <ul>
 *   <li>GQA (Qwen3, gpt-oss): per token, K and V of every KV head,
 *       {@code kvHeads * (headDim + vHeadDim)} elements; sliding-window layers keep at most
 *       {@code sliding_window} tokens.</li>
 *   <li>MLA (DeepSeek-V3, Kimi-K2): per token, the compressed latent and the shared rope key,
 *       {@code kv_lora_rank + qk_rope_head_dim} elements (keys and values are re-expanded from it).</li>
 *   <li>DeepSeek V4: every layer keeps a sliding window of {@code sliding_window} tokens of its shared
 *       K=V head ({@code kvHeads * head_dim} elements each). A compressed layer adds one entry per
 *       {@code ratio} tokens: the pooled KV ({@code head_dim}) and, for compressed-sparse layers,
 *       the lightning indexer's key ({@code index_head_dim}). The compressor also carries the
 *       tokens of its open window (KV and gate, {@code ratio} rows of {@code coff*head_dim}; CSA,
 *       {@code coff = 2}, also the previous window's overlap half), and the indexer likewise.</li>
 * </ul>
 * Elements are of the cache dtype ({@code bf16} unless the job asks for {@code fp8}).
 *
 * <p>A rollout engine holds the GQA and MLA caches in paged pools ({@link #pagedPoolBytes}): blocks of
 * {@link #PAGED_BLOCK_TOKENS} positions, one pool for the full-attention layers and, where the model has
 * sliding-window layers (gpt-oss; Qwen3 with {@code use_sliding_window}), a window pool for them
 * ({@link #windowBlocks}), from which each sequence gives back the blocks that have left its window. DeepSeek V4
 * keeps its decode state beside the pool, which holds no rows for it.
 */
public final class KvCacheLayout {
    /** Positions of one block of a rollout engine's paged cache. */
    public static final int PAGED_BLOCK_TOKENS = 16;
    /** The fewest blocks a rollout engine's paged cache holds. */
    public static final int PAGED_MIN_BLOCKS = 64;

    private KvCacheLayout() {
    }

    /**
     * New tokens a rollout engine runs in one forward while it admits prompts, when it decodes {@code sequences}
     * sequences: 64 a sequence, at least 4096.
     */
    public static int engineBatchTokens(long sequences) {
        return Math.toIntExact(Math.max(4096, Math.multiplyExact(sequences, 64L)));
    }

    /**
     * Blocks of the paged pool of a rollout engine that decodes {@code sequences} sequences of up to {@code tokens}
     * tokens at once: each sequence's blocks and one more (the block a forked sample copies before it writes into a
     * shared one), at least {@link #PAGED_MIN_BLOCKS}.
     */
    public static int pagedBlocks(long sequences, long tokens) {
        long perSequence = (tokens + PAGED_BLOCK_TOKENS - 1) / PAGED_BLOCK_TOKENS + 1;
        return Math.toIntExact(Math.max(PAGED_MIN_BLOCKS, Math.multiplyExact(sequences, perSequence)));
    }

    /**
     * Blocks of the window pool of a rollout engine that decodes {@code sequences} sequences of up to {@code tokens}
     * tokens at once, running up to {@code batchTokens} new tokens a forward, for sliding-window layers of
     * {@code window} positions: each running sequence's window (the blocks its next query sees, the one its next token
     * goes into included: {@code (window - 1) / 16 + 2}), and one forward's prefill chunks until the forward is done
     * (the blocks of its new tokens and a partial one a sequence; a longer prompt is fed in chunks); at least
     * {@link #PAGED_MIN_BLOCKS}, at most {@link #pagedBlocks} (what the layers would hold in the main pool).
     */
    public static int windowBlocks(long sequences, long tokens, int window, long batchTokens) {
        if (window <= 0) {
            throw new IllegalArgumentException("a window pool needs a positive window, got " + window);
        }
        long bs = PAGED_BLOCK_TOKENS;
        long running = Math.multiplyExact(sequences, (window - 1) / bs + 2);
        long prefill = (batchTokens + bs - 1) / bs + sequences;
        return Math.toIntExact(Math.min(pagedBlocks(sequences, tokens),
                Math.max(PAGED_MIN_BLOCKS, Math.addExact(running, prefill))));
    }

    /**
     * The window every sliding-window layer of {@code spec} keeps, when its rollout engine holds them in a window pool
     * ({@link #windowBlocks}): a GQA model whose sliding layers all attend over {@code sliding_window}; 0 when it
     * has none (every layer in the main pool).
     */
    public static int windowPoolWindow(ModelSpec spec) {
        if (spec.mla() != null || spec.deepseekV4() != null || spec.slidingWindow() <= 0) {
            return 0;
        }
        for (int i = 0; i < spec.numLayers(); i++) {
            if (spec.attentionKind(i) == AttentionKind.SLIDING) {
                return spec.slidingWindow();
            }
        }
        return 0;
    }

    /**
     * Bytes of the paged pools of a rollout engine that decodes {@code sequences} sequences of up to {@code tokens}
     * tokens, {@code batchTokens} new ones a forward: the full-attention layers' full-resolution rows in
     * {@link #pagedBlocks} blocks, the sliding-window layers' in {@link #windowBlocks} blocks and the window pool's
     * block of zeros ({@link #windowPoolWindow}); elements of {@code dtype}. DeepSeek V4's pool holds no rows (its
     * decode state is {@link #bytesPerSequence}'s form): 0.
     */
    public static long pagedPoolBytes(ModelSpec spec, long sequences, long tokens, long batchTokens, DType dtype) {
        if (spec.deepseekV4() != null) {
            return 0;
        }
        int window = windowPoolWindow(spec);
        long full = 0;
        long sliding = 0;
        for (int i = 0; i < spec.numLayers(); i++) {
            if (window > 0 && spec.attentionKind(i) == AttentionKind.SLIDING) {
                sliding = Math.addExact(sliding, bytesPerToken(spec, i, dtype));
            } else {
                full = Math.addExact(full, bytesPerToken(spec, i, dtype));
            }
        }
        long bytes = Math.multiplyExact((long) pagedBlocks(sequences, tokens) * PAGED_BLOCK_TOKENS, full);
        if (sliding > 0) {
            long blocks = windowBlocks(sequences, tokens, window, batchTokens) + 1L;   // the block of zeros
            bytes = Math.addExact(bytes, Math.multiplyExact(blocks * PAGED_BLOCK_TOKENS, sliding));
        }
        return bytes;
    }

    /** Bytes one cached token takes in layer {@code layer}'s full-resolution cache, bf16 elements. */
    public static long bytesPerToken(ModelSpec spec, int layer) {
        return bytesPerToken(spec, layer, DType.BF16);
    }

    /** Bytes one cached token takes in layer {@code layer}'s full-resolution (uncompressed) cache. */
    public static long bytesPerToken(ModelSpec spec, int layer, DType dtype) {
        spec.attentionKind(layer); // range check
        long elems;
        if (spec.mla() != null) {
            elems = spec.mla().cacheElementsPerToken();
        } else if (spec.deepseekV4() != null) {
            elems = (long) spec.numKvHeads() * spec.headDim();
        } else {
            elems = (long) spec.numKvHeads() * (spec.headDim() + spec.vHeadDim());
        }
        return elems * dtype.bytes();
    }

    /** Tokens of the full-resolution cache a sequence of {@code tokens} occupies in layer {@code layer}. */
    public static long cachedTokens(ModelSpec spec, int layer, long tokens) {
        AttentionKind k = spec.attentionKind(layer);
        boolean windowed = k == AttentionKind.SLIDING || spec.deepseekV4() != null;
        return windowed ? Math.min(tokens, spec.slidingWindow()) : tokens;
    }

    /** Tokens per compressed entry in layer {@code layer}; 0 for a layer without compression. */
    public static int compressRate(ModelSpec spec, int layer) {
        DeepseekV4Spec v = spec.deepseekV4();
        return v == null ? 0 : v.compressRate(spec.attentionKind(layer));
    }

    /** Bytes of one compressed entry of layer {@code layer} (pooled KV, plus the indexer key for CSA); 0 if none. */
    public static long bytesPerCompressedEntry(ModelSpec spec, int layer, DType dtype) {
        if (compressRate(spec, layer) == 0) {
            return 0;
        }
        long elems = spec.headDim();
        if (spec.attentionKind(layer) == AttentionKind.COMPRESSED_SPARSE) {
            elems += spec.deepseekV4().indexHeadDim();
        }
        return elems * dtype.bytes();
    }

    /** Bytes of the compressor's per-sequence state in layer {@code layer} (open window and overlap); 0 if none. */
    public static long compressorStateBytes(ModelSpec spec, int layer, DType dtype) {
        long ratio = compressRate(spec, layer);
        if (ratio == 0) {
            return 0;
        }
        long hd = spec.headDim();
        if (spec.attentionKind(layer) == AttentionKind.COMPRESSED_SPARSE) {
            long ihd = spec.deepseekV4().indexHeadDim();
            // open window: KV and gate, ratio x 2*dim; overlap: KV and gate of the previous window's half, ratio x dim
            return (2 * ratio * 2 * hd + 2 * ratio * hd + 2 * ratio * 2 * ihd + 2 * ratio * ihd) * dtype.bytes();
        }
        return 2 * ratio * hd * dtype.bytes();
    }

    /** Bytes the cache of layer {@code layer} holds for one sequence of {@code tokens} tokens. */
    public static long bytesForSequence(ModelSpec spec, int layer, long tokens, DType dtype) {
        if (tokens < 0) {
            throw new IllegalArgumentException("negative token count " + tokens);
        }
        long b = cachedTokens(spec, layer, tokens) * bytesPerToken(spec, layer, dtype);
        int ratio = compressRate(spec, layer);
        if (ratio > 0) {
            b += tokens / ratio * bytesPerCompressedEntry(spec, layer, dtype) + compressorStateBytes(spec, layer, dtype);
        }
        return b;
    }

    /** Bytes all layers' caches hold for one sequence of {@code tokens} tokens. */
    public static long bytesPerSequence(ModelSpec spec, long tokens, DType dtype) {
        long b = 0;
        for (int i = 0; i < spec.numLayers(); i++) {
            b = Math.addExact(b, bytesForSequence(spec, i, tokens, dtype));
        }
        return b;
    }

    /**
     * How many ways tensor parallelism splits a layer's cache: GQA heads are split over up to
     * {@code kvHeads} ranks; MLA's latent and V4's single shared head are replicated on every rank.
     */
    public static int tensorParallelSplit(ModelSpec spec, int tp) {
        if (spec.mla() != null || spec.deepseekV4() != null) {
            return 1;
        }
        return Math.min(tp, spec.numKvHeads());
    }
}
