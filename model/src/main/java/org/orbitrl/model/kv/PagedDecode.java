package org.orbitrl.model.kv;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DecodeLayer;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.arch.CausalLM;

import java.util.List;

/**
 * One decode step of a batch of sequences of one {@link BlockPool}, each feeding one token: the
 * write slots, block tables and lengths, uploaded once and used by every layer, so that a layer
 * prepares and writes its keys and values with one {@link Backend#pagedDecodePrep} and attends with
 * one {@link Backend#pagedDecodeAttention}, whatever the batch.
 */
public final class PagedDecode {
    private final BlockPool pool;
    private final int batch;
    private final Tensor slots;  // i32 [B]: pool row of each sequence's new token
    private final Tensor tables; // i32 [B, maxBlocks]
    private final Tensor lens;   // i32 [B]: keys of each sequence, the new token included

    PagedDecode(BlockPool pool, int batch, Tensor slots, Tensor tables, Tensor lens) {
        this.pool = pool;
        this.batch = batch;
        this.slots = slots;
        this.tables = tables;
        this.lens = lens;
    }

    /**
     * The step's tables when every segment feeds one token into a {@link PagedSequence} (room
     * reserved, not yet advanced) of one pool that stores values and holds every layer; null otherwise.
     */
    public static PagedDecode of(TensorAllocator a, List<CausalLM.Segment> segments) {
        if (segments.isEmpty()) {
            return null;
        }
        BlockPool pool = null;
        int maxBlocks = 1;
        for (CausalLM.Segment s : segments) {
            if (s.tokens().length != 1 || !(s.cache() instanceof PagedSequence p) || p.pool().vHeadDim() == 0
                    || p.windowPool() != null || pool != null && p.pool() != pool) {
                return null;
            }
            pool = p.pool();
            maxBlocks = Math.max(maxBlocks, p.blocks());
        }
        maxBlocks = tableWidth(maxBlocks);
        int n = segments.size();
        int bs = pool.blockSize();
        int[] slot = new int[n];
        int[] table = new int[n * maxBlocks];
        int[] len = new int[n];
        for (int i = 0; i < n; i++) {
            PagedSequence p = (PagedSequence) segments.get(i).cache();
            int pos = p.length();
            slot[i] = p.block(pos / bs) * bs + pos % bs;
            for (int j = 0; j < p.blocks(); j++) {
                table[i * maxBlocks + j] = p.block(j);
            }
            len[i] = pos + 1;
        }
        return new PagedDecode(pool, n, a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(slot, n)),
                a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(table, n, maxBlocks)),
                a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(len, n)));
    }

    /**
     * The width of the block tables of a step whose widest sequence holds {@code blocks} blocks: a power
     * of two, at least 4. A device's decode attention may split its keys by the table's width, so eager
     * steps and captured ones (whose tables have this width) sum in the same order.
     */
    public static int tableWidth(int blocks) {
        return Math.max(4, blocks <= 1 ? 1 : Integer.highestOneBit(blocks - 1) << 1);
    }

    /**
     * One layer from the projections' raw outputs ({@link Backend#pagedDecodePrep}): q [B, Hq, D] and k [B, Hkv, D]
     * normed per head (qNorm, kNorm, or null) and roped at the new positions, q into qOut, k and v [B, Hkv, Dv] written
     * at the new positions; then {@link #attend} with qOut.
     */
    public void prepare(Backend b, int layer, Tensor q, Tensor k, Tensor v, Tensor qNorm, Tensor kNorm, float eps, Tensor positions,
                        RopeTable rope, Tensor qOut) {
        b.pagedDecodePrep(q, k, v, qNorm, kNorm, eps, positions, rope, qOut, pool.keys(layer), pool.values(layer), slots);
    }

    /**
     * A whole decoder layer of a one-sequence step in one backend call where it has one ({@link Backend#decodeLayer}): x
     * [1, hidden] in, out [1, hidden] written, the new key and value into {@code layer}'s caches. False (nothing written)
     * for a batch of several sequences or where the backend declines.
     */
    public boolean layer(Backend b, int layer, DecodeLayer w, Tensor x, Tensor out, Tensor positions, RopeTable rope) {
        return batch == 1 && b.decodeLayer(w, x, out, positions, rope, pool.keys(layer), pool.values(layer), slots, tables, lens,
                pool.blockSize());
    }

    /** q [B, Hq, D] attends over each sequence's keys of {@code layer}, the new ones written, into out [B, Hq, Dv]. */
    public void attend(Backend b, int layer, Tensor q, Tensor out, AttentionSpec spec) {
        b.pagedDecodeAttention(q, pool.keys(layer), pool.values(layer), tables, lens, pool.blockSize(), pool.kvHeads(), out, spec);
    }
}
