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
 */
public final class PagedSequence implements SequenceCache, AutoCloseable {
    private final BlockPool pool;
    private final List<Integer> table = new ArrayList<>();
    private int length;
    private boolean freed;
    private Attachment attachment;

    public PagedSequence(BlockPool pool) {
        this.pool = pool;
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

    /** Blocks held (shared or not). */
    public int blocks() {
        return table.size();
    }

    /** The pool holding this sequence's blocks. */
    BlockPool pool() {
        return pool;
    }

    /** The pool block holding positions [i·blockSize, (i+1)·blockSize). */
    int block(int i) {
        return table.get(i);
    }

    /** Blocks {@link #reserve}(tokens) would take from the pool. */
    public int blocksNeeded(int tokens) {
        int bs = pool.blockSize();
        int have = table.size();
        int need = (length + tokens + bs - 1) / bs;
        int fresh = Math.max(0, need - have);
        boolean cow = length % bs != 0 && tokens > 0 && pool.refs(table.get(length / bs)) > 1;
        return fresh + (cow ? 1 : 0);
    }

    @Override
    public void reserve(int tokens) {
        check();
        int needed = blocksNeeded(tokens);
        if (needed > pool.freeBlocks()) {
            throw new CacheFullException("kv cache full: " + needed + " blocks needed, " + pool.freeBlocks() + " free");
        }
        int bs = pool.blockSize();
        if (length % bs != 0 && tokens > 0) {
            int idx = length / bs;
            int old = table.get(idx);
            if (pool.refs(old) > 1) {          // copy on write: the partial block is shared
                int fresh = pool.allocate();
                pool.copy(old, fresh, length % bs);
                pool.release(old);
                table.set(idx, fresh);
            }
        }
        while (table.size() * bs < length + tokens) {
            table.add(pool.allocate());
        }
    }

    @Override
    public void write(Backend backend, int layer, Tensor k, Tensor v) {
        check();
        int t = k.size(0);
        int bs = pool.blockSize();
        Tensor kp = pool.keys(layer);
        Tensor vp = pool.values(layer);   // null when values are the keys' leading channels
        int kw = Math.toIntExact(kp.dim(1));
        int vw = vp == null ? 0 : Math.toIntExact(vp.dim(1));
        if (kp.dtype() != k.dtype()) {    // a bf16 pool: the rows rounded as they are written, one backend step
            int[] slots = new int[t];
            for (int i = 0; i < t; i++) {
                int pos = length + i;
                slots[i] = table.get(pos / bs) * bs + pos % bs;
            }
            Tensor s = backend.allocator().upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(slots, t));   // i32 [T]
            backend.pagedKvWrite(k.contiguous().reshape(t, kw), vp == null ? null : v.contiguous().reshape(t, vw), kp, vp, s);
            backend.allocator().release(s);
            return;
        }
        for (int i = 0; i < t; i++) {
            int pos = length + i;
            long row = (long) table.get(pos / bs) * bs + pos % bs;
            pool.allocator().copy(k.select(0, i).contiguous().reshape(kw), kp.select(0, row));
            if (vp != null) {
                pool.allocator().copy(v.select(0, i).contiguous().reshape(vw), vp.select(0, row));
            }
        }
    }

    @Override
    public void attend(Backend backend, int layer, Tensor q, Tensor out, int queryStart, int upTo, AttentionSpec spec) {
        check();
        int bs = pool.blockSize();
        int[] rows = new int[upTo];
        for (int p = 0; p < upTo; p++) {
            rows[p] = table.get(p / bs) * bs + p % bs;
        }
        Tensor idx = backend.allocator().upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(rows, upTo)); // i32 [upTo]
        Tensor k = backend.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, upTo, pool.kvHeads() * (long) pool.headDim());
        backend.gatherRows(pool.keys(layer), idx, k);
        Tensor k3 = k.reshape(upTo, pool.kvHeads(), pool.headDim());
        Tensor v = null;
        Tensor v3;
        if (pool.vHeadDim() == 0) {
            v3 = k3.slice(2, 0, out.size(2));
        } else {
            v = backend.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, upTo, pool.kvHeads() * (long) pool.vHeadDim());
            backend.gatherRows(pool.values(layer), idx, v);
            v3 = v.reshape(upTo, pool.kvHeads(), pool.vHeadDim());
        }
        backend.attention(q, k3, v3, out, queryStart, spec);
        backend.allocator().release(idx);
        backend.allocator().release(k);
        if (v != null) {
            backend.allocator().release(v);
        }
    }

    @Override
    public void advance(int tokens) {
        length += tokens;
    }

    /** A new sequence sharing every block of this one (prefix sharing; writes copy first). */
    public PagedSequence fork() {
        check();
        PagedSequence s = new PagedSequence(pool);
        for (int b : table) {
            pool.retain(b);
            s.table.add(b);
        }
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

    /** Returns every block to the pool. */
    @Override
    public void close() {
        if (!freed) {
            table.forEach(pool::release);
            table.clear();
            freed = true;
        }
    }

    private void check() {
        if (freed) {
            throw new IllegalStateException("sequence cache already freed");
        }
    }
}
