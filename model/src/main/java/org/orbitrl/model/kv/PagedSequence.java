package org.orbitrl.model.kv;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.arch.SequenceCache;

import java.util.ArrayList;
import java.util.List;

/**
 * One sequence's view of a {@link BlockPool}: a block table mapping positions to blocks.
 * Attention gathers the sequence's rows into position order and runs the same attention kernel a
 * contiguous cache uses, so a paged sequence computes bit-for-bit what a contiguous one does.
 *
 * <p>With a window pool beside the main one ({@link BlockPool#window}), the sliding-window layers' rows live in a table
 * of their own, from which every block whose positions have left the window of every future query goes back to its
 * pool as the sequence advances; its positions then read as the pool's block of zeros, which the window masks.
 */
public final class PagedSequence implements SequenceCache, AutoCloseable {
    /**
     * Keys a sliding layer's gather leaves out come in whole tiles of this many: exact mode's attention walks keys in
     * tiles of 64 from the first key it is given, and sums each tile's terms by key index mod 4, so a gather starting
     * on a tile boundary adds every term in the order a gather from position 0 does (the host's kernel starts at each
     * query's first visible key whatever the gather).
     */
    static final int KEY_TILE = 64;

    private final Table main;
    private final Table windowed;   // null without a window pool
    private int length;
    private boolean freed;
    private Attachment attachment;

    /** A pool's blocks of this sequence, by block of positions; -1 for one given back (window pools only). */
    private static final class Table {
        final BlockPool pool;
        final List<Integer> ids = new ArrayList<>();
        int firstLive;   // blocks before it are given back

        Table(BlockPool pool) {
            this.pool = pool;
        }

        /** Blocks reserving {@code tokens} more positions after {@code length} takes from the pool. */
        int needed(int length, int tokens) {
            int bs = pool.blockSize();
            int need = (length + tokens + bs - 1) / bs;
            int fresh = Math.max(0, need - ids.size());
            boolean cow = length % bs != 0 && tokens > 0 && pool.refs(ids.get(length / bs)) > 1;
            return fresh + (cow ? 1 : 0);
        }

        void reserve(int length, int tokens) {
            int bs = pool.blockSize();
            if (length % bs != 0 && tokens > 0) {
                int idx = length / bs;
                int old = ids.get(idx);
                if (pool.refs(old) > 1) {          // copy on write: the partial block is shared
                    int fresh = pool.allocate();
                    pool.copy(old, fresh, length % bs);
                    pool.release(old);
                    ids.set(idx, fresh);
                }
            }
            while (ids.size() * bs < length + tokens) {
                ids.add(pool.allocate());
            }
        }

        /**
         * Gives back the blocks no query from position {@code length} on sees: those whose last position is before
         * {@code length - window + 1}.
         */
        void trim(int length) {
            int bs = pool.blockSize();
            while (firstLive < ids.size() && (long) (firstLive + 1) * bs <= length - pool.window() + 1L) {
                pool.release(ids.get(firstLive));
                ids.set(firstLive, -1);
                firstLive++;
            }
        }

        /** The pool row holding position {@code p}: the block of zeros for a position given back. */
        long row(int p) {
            int bs = pool.blockSize();
            int b = ids.get(p / bs);
            return (long) (b < 0 ? pool.holeBlock() : b) * bs + p % bs;
        }

        Table fork() {
            Table t = new Table(pool);
            for (int b : ids) {
                if (b >= 0) {
                    pool.retain(b);
                }
                t.ids.add(b);
            }
            t.firstLive = firstLive;
            return t;
        }

        void close() {
            for (int b : ids) {
                if (b >= 0) {
                    pool.release(b);
                }
            }
            ids.clear();
        }
    }

    public PagedSequence(BlockPool pool) {
        this(pool, null);
    }

    /**
     * A sequence whose sliding-window layers keep their rows in {@code windowPool} (null: none; every layer in
     * {@code pool}). The two pools must split the layers between them.
     */
    public PagedSequence(BlockPool pool, BlockPool windowPool) {
        if (windowPool != null) {
            if (windowPool.window() <= 0 || windowPool.blockSize() != pool.blockSize() || windowPool.layers() != pool.layers()) {
                throw new IllegalArgumentException("a window pool needs a window and the main pool's block size and layers: "
                        + "window " + windowPool.window() + ", blocks of " + windowPool.blockSize() + " and "
                        + pool.blockSize() + ", layers " + windowPool.layers() + " and " + pool.layers());
            }
            for (int l = 0; l < pool.layers(); l++) {
                if (pool.holds(l) == windowPool.holds(l)) {
                    throw new IllegalArgumentException("layer " + l + " is " + (pool.holds(l) ? "in both pools" : "in neither pool"));
                }
            }
        }
        this.main = new Table(pool);
        this.windowed = windowPool == null ? null : new Table(windowPool);
    }

    private PagedSequence(Table main, Table windowed) {
        this.main = main;
        this.windowed = windowed;
    }

    /** Thrown by {@link #reserve} when the pool has too few free blocks; nothing was changed. */
    public static final class CacheFullException extends RuntimeException {
        public CacheFullException(String message) {
            super(message);
        }
    }

    @Override
    public int length() {
        return length;
    }

    /** Blocks of the main pool held (shared or not). */
    public int blocks() {
        return main.ids.size();
    }

    /** The main pool, which holds every layer's rows but the window pool's. */
    BlockPool pool() {
        return main.pool;
    }

    /** The pool of the sliding-window layers' rows; null when the main pool holds every layer. */
    public BlockPool windowPool() {
        return windowed == null ? null : windowed.pool;
    }

    /** The main pool's block holding positions [i·blockSize, (i+1)·blockSize). */
    int block(int i) {
        return main.ids.get(i);
    }

    /** The window pool's block holding positions [i·blockSize, (i+1)·blockSize): its block of zeros once given back. */
    int windowBlock(int i) {
        int b = windowed.ids.get(i);
        return b < 0 ? windowed.pool.holeBlock() : b;
    }

    /** Blocks {@link #reserve}(tokens) would take from the main pool. */
    public int blocksNeeded(int tokens) {
        return main.needed(length, tokens);
    }

    /** Blocks {@link #reserve}(tokens) would take from the window pool; 0 without one. */
    public int windowBlocksNeeded(int tokens) {
        return windowed == null ? 0 : windowed.needed(length, tokens);
    }

    /** Blocks of the window pool this sequence holds now (given-back ones not counted). */
    public int windowBlocksHeld() {
        return windowed == null ? 0 : windowed.ids.size() - windowed.firstLive;
    }

    @Override
    public void reserve(int tokens) {
        check();
        int needed = blocksNeeded(tokens);
        if (needed > main.pool.freeBlocks()) {
            throw new CacheFullException("kv cache full: " + needed + " blocks needed, " + main.pool.freeBlocks() + " free");
        }
        int windowNeeded = windowBlocksNeeded(tokens);
        if (windowed != null && windowNeeded > windowed.pool.freeBlocks()) {
            throw new CacheFullException("kv cache full: " + windowNeeded + " blocks of the sliding-window layers needed, "
                    + windowed.pool.freeBlocks() + " free");
        }
        main.reserve(length, tokens);
        if (windowed != null) {
            windowed.reserve(length, tokens);
        }
    }

    /** The table holding {@code layer}'s rows. */
    private Table table(int layer) {
        return windowed != null && windowed.pool.holds(layer) ? windowed : main;
    }

    @Override
    public void write(Backend backend, int layer, Tensor k, Tensor v) {
        check();
        Table tb = table(layer);
        BlockPool pool = tb.pool;
        int t = k.size(0);
        Tensor kp = pool.keys(layer);
        Tensor vp = pool.values(layer);   // null when values are the keys' leading channels
        int kw = Math.toIntExact(kp.dim(1));
        int vw = vp == null ? 0 : Math.toIntExact(vp.dim(1));
        if (kp.dtype() != k.dtype()) {    // a bf16 pool: the rows rounded as they are written, one backend step
            int[] slots = new int[t];
            for (int i = 0; i < t; i++) {
                slots[i] = Math.toIntExact(tb.row(length + i));
            }
            Tensor s = backend.allocator().upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(slots, t));   // i32 [T]
            backend.pagedKvWrite(k.contiguous().reshape(t, kw), vp == null ? null : v.contiguous().reshape(t, vw), kp, vp, s);
            backend.allocator().release(s);
            return;
        }
        for (int i = 0; i < t; i++) {
            long row = tb.row(length + i);
            pool.allocator().copy(k.select(0, i).contiguous().reshape(kw), kp.select(0, row));
            if (vp != null) {
                pool.allocator().copy(v.select(0, i).contiguous().reshape(vw), vp.select(0, row));
            }
        }
    }

    @Override
    public void attend(Backend backend, int layer, Tensor q, Tensor out, int queryStart, int upTo, AttentionSpec spec) {
        check();
        Table tb = table(layer);
        BlockPool pool = tb.pool;
        if (pool.window() > 0 && spec.slidingWindow() != pool.window()) {
            throw new IllegalArgumentException("layer " + layer + " attends with window " + spec.slidingWindow()
                    + " over a pool that keeps " + pool.window() + " positions");
        }
        // a sliding layer gathers from the tile of keys holding its first query's first visible key on: whole tiles of
        // KEY_TILE keys left out, so that every kernel sums what it sums over all of them (the window masks the rest)
        int from = pool.window() > 0 ? Math.max(0, queryStart - pool.window() + 1) / KEY_TILE * KEY_TILE : 0;
        int n = upTo - from;
        int[] rows = new int[n];
        for (int p = from; p < upTo; p++) {
            rows[p - from] = Math.toIntExact(tb.row(p));
        }
        Tensor idx = backend.allocator().upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(rows, n)); // i32 [n]
        Tensor k = backend.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, pool.kvHeads() * (long) pool.headDim());
        backend.gatherRows(pool.keys(layer), idx, k);
        Tensor k3 = k.reshape(n, pool.kvHeads(), pool.headDim());
        Tensor v = null;
        Tensor v3;
        if (pool.vHeadDim() == 0) {
            v3 = k3.slice(2, 0, out.size(2));
        } else {
            v = backend.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, pool.kvHeads() * (long) pool.vHeadDim());
            backend.gatherRows(pool.values(layer), idx, v);
            v3 = v.reshape(n, pool.kvHeads(), pool.vHeadDim());
        }
        backend.attention(q, k3, v3, out, queryStart - from, spec);
        backend.allocator().release(idx);
        backend.allocator().release(k);
        if (v != null) {
            backend.allocator().release(v);
        }
    }

    /** Advances the length; a window pool's blocks no later query sees go back to it. */
    @Override
    public void advance(int tokens) {
        length += tokens;
        if (windowed != null) {
            windowed.trim(length);
        }
    }

    /** A new sequence sharing every block of this one (prefix sharing; writes copy first). */
    public PagedSequence fork() {
        check();
        PagedSequence s = new PagedSequence(main.fork(), windowed == null ? null : windowed.fork());
        s.length = length;
        s.attachment = attachment == null ? null : attachment.copy();
        return s;
    }

    @Override
    public Attachment attachment() {
        return attachment;
    }

    @Override
    public void attach(Attachment state) {
        this.attachment = state;
    }

    /** Returns every block to its pool, and the memory of any model state attached. */
    @Override
    public void close() {
        if (!freed) {
            main.close();
            if (windowed != null) {
                windowed.close();
            }
            if (attachment != null) {
                attachment.release();
                attachment = null;
            }
            freed = true;
        }
    }

    private void check() {
        if (freed) {
            throw new IllegalStateException("sequence cache already freed");
        }
    }
}
