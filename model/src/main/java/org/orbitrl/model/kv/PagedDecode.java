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
 * one {@link Backend#pagedDecodeAttention}, whatever the batch. Where a window pool keeps the
 * sliding-window layers' rows ({@link PagedSequence#windowPool}) the step has their slots and tables
 * too, its given-back blocks read as the pool's block of zeros.
 */
public final class PagedDecode {
    private final BlockPool pool;
    private final int batch;
    private final Tensor slots;  // i32 [B]: pool row of each sequence's new token
    private final Tensor tables; // i32 [B, maxBlocks]
    private final Tensor lens;   // i32 [B]: keys of each sequence, the new token included
    private final BlockPool windowPool;   // null: the pool holds every layer
    private final Tensor windowSlots;     // i32 [B], of the window pool
    private final Tensor windowTables;    // i32 [B, maxBlocks], of the window pool
    private final boolean owned;          // its tensors uploaded by of(): released with release()

    PagedDecode(BlockPool pool, int batch, Tensor slots, Tensor tables, Tensor lens) {
        this(pool, batch, slots, tables, lens, null, null, null, false);
    }

    PagedDecode(BlockPool pool, int batch, Tensor slots, Tensor tables, Tensor lens, BlockPool windowPool, Tensor windowSlots,
                Tensor windowTables) {
        this(pool, batch, slots, tables, lens, windowPool, windowSlots, windowTables, false);
    }

    private PagedDecode(BlockPool pool, int batch, Tensor slots, Tensor tables, Tensor lens, BlockPool windowPool,
                        Tensor windowSlots, Tensor windowTables, boolean owned) {
        this.pool = pool;
        this.batch = batch;
        this.slots = slots;
        this.tables = tables;
        this.lens = lens;
        this.windowPool = windowPool;
        this.windowSlots = windowSlots;
        this.windowTables = windowTables;
        this.owned = owned;
    }

    /**
     * The step's tables when every segment feeds one token into a {@link PagedSequence} (room
     * reserved, not yet advanced) of one pool (and one window pool, or none); null otherwise. A pool that stores no
     * values (a latent cache: {@link BlockPool#vHeadDim} 0) takes its rows through {@link #write} and {@link #attend}.
     * {@link #release} gives its tensors back.
     */
    public static PagedDecode of(TensorAllocator a, List<CausalLM.Segment> segments) {
        if (segments.isEmpty()) {
            return null;
        }
        BlockPool pool = null;
        BlockPool windowPool = null;
        int maxBlocks = 1;
        for (CausalLM.Segment s : segments) {
            if (s.tokens().length != 1 || !(s.cache() instanceof PagedSequence p)
                    || pool != null && (p.pool() != pool || p.windowPool() != windowPool)) {
                return null;
            }
            pool = p.pool();
            windowPool = p.windowPool();
            maxBlocks = Math.max(maxBlocks, p.blocks());
        }
        maxBlocks = tableWidth(maxBlocks);
        int n = segments.size();
        int bs = pool.blockSize();
        int[] slot = new int[n];
        int[] table = new int[n * maxBlocks];
        int[] len = new int[n];
        int[] windowSlot = windowPool == null ? null : new int[n];
        int[] windowTable = windowPool == null ? null : new int[n * maxBlocks];
        for (int i = 0; i < n; i++) {
            PagedSequence p = (PagedSequence) segments.get(i).cache();
            int pos = p.length();
            slot[i] = p.block(pos / bs) * bs + pos % bs;
            for (int j = 0; j < p.blocks(); j++) {
                table[i * maxBlocks + j] = p.block(j);
            }
            if (windowPool != null) {
                windowSlot[i] = p.windowBlock(pos / bs) * bs + pos % bs;
                for (int j = 0; j < maxBlocks; j++) {   // given back and unused entries: the block of zeros
                    windowTable[i * maxBlocks + j] = j < p.blocks() ? p.windowBlock(j) : windowPool.holeBlock();
                }
            }
            len[i] = pos + 1;
        }
        return new PagedDecode(pool, n, a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(slot, n)),
                a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(table, n, maxBlocks)),
                a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(len, n)), windowPool,
                windowPool == null ? null : a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(windowSlot, n)),
                windowPool == null ? null : a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(windowTable, n, maxBlocks)), true);
    }

    /** Gives back the tensors {@link #of} uploaded (a {@link DecodeStep}'s are its own). */
    public void release(TensorAllocator a) {
        if (!owned) {
            return;
        }
        for (Tensor t : new Tensor[]{slots, tables, lens, windowSlots, windowTables}) {
            if (t != null) {
                a.release(t);
            }
        }
    }

    /** Whether {@code layer}'s rows are in the window pool. */
    private boolean windowed(int layer) {
        return windowPool != null && windowPool.holds(layer);
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
        BlockPool p = windowed(layer) ? windowPool : pool;
        b.pagedDecodePrep(q, k, v, qNorm, kNorm, eps, positions, rope, qOut, p.keys(layer), p.values(layer),
                windowed(layer) ? windowSlots : slots);
    }

    /**
     * {@link #prepare} and {@link #attend} in one backend call where it has that form ({@link
     * Backend#pagedDecodePrepAttention}): q [B, Hq, D], k and v [B, Hkv, D] as the projections wrote them, out [B, Hq, D].
     * False, nothing written, where the backend declines or the layer's pool stores no values.
     */
    public boolean prepareAndAttend(Backend b, int layer, Tensor q, Tensor k, Tensor v, Tensor qNorm, Tensor kNorm, float eps,
                                    Tensor positions, RopeTable rope, Tensor out, AttentionSpec spec) {
        BlockPool p = windowed(layer) ? windowPool : pool;
        return p.values(layer) != null && b.pagedDecodePrepAttention(q, k, v, qNorm, kNorm, eps, positions, rope, p.keys(layer),
                p.values(layer), windowed(layer) ? windowSlots : slots, windowed(layer) ? windowTables : tables, lens, p.blockSize(), out,
                spec);
    }

    /**
     * A whole decoder layer of a one-sequence step in one backend call where it has one ({@link Backend#decodeLayer}): x
     * [1, hidden] in, out [1, hidden] written, the new key and value into {@code layer}'s caches. False (nothing written)
     * for a batch of several sequences or where the backend declines.
     */
    public boolean layer(Backend b, int layer, DecodeLayer w, Tensor x, Tensor out, Tensor positions, RopeTable rope) {
        return batch == 1 && windowPool == null && pool.vHeadDim() > 0 && b.decodeLayer(w, x, out, positions, rope, pool.keys(layer), pool.values(layer),
                slots, tables, lens, pool.blockSize());
    }

    /**
     * Writes each sequence's new row of {@code layer} as it is: k f32 [B, Hkv·D] and v f32 [B, Hkv·Dv] (null for a pool
     * that stores no values, whose rows' leading channels are the values) at the step's slots ({@link
     * Backend#pagedKvWrite}).
     */
    public void write(Backend b, int layer, Tensor k, Tensor v) {
        BlockPool p = windowed(layer) ? windowPool : pool;
        if ((v == null) != (p.values(layer) == null)) {
            throw new IllegalArgumentException("layer " + layer + ": values " + (v == null ? "missing for a pool that stores them"
                    : "given for a pool that stores none (its keys' leading channels are the values)"));
        }
        b.pagedKvWrite(k, v, p.keys(layer), p.values(layer), windowed(layer) ? windowSlots : slots);
    }

    /**
     * q [B, Hq, D] attends over each sequence's keys of {@code layer}, the new ones written, into out [B, Hq, Dv] (for a
     * pool that stores no values, the values are the first Dv channels of the keys).
     */
    public void attend(Backend b, int layer, Tensor q, Tensor out, AttentionSpec spec) {
        BlockPool p = windowed(layer) ? windowPool : pool;
        b.pagedDecodeAttention(q, p.keys(layer), p.values(layer), windowed(layer) ? windowTables : tables, lens, p.blockSize(),
                p.kvHeads(), out, spec);
    }
}
