package org.orbitrl.model.kv;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.arch.CausalLM;

import java.lang.foreign.Arena;
import java.util.List;

/**
 * A decode step of a fixed batch of B rows over one {@link BlockPool} whose per-step inputs live in
 * fixed backend tensors, so that its device side can be captured once
 * ({@link Backend#captureStep}) and replayed. Split in three:
 * <ul>
 *   <li>{@link #prepare} (host): reserves each sequence's room, packs token ids, positions, write
 *       slots, lengths and block tables (and, where a window pool keeps the sliding-window layers'
 *       rows, that pool's slots and tables) into one host buffer and copies it to the device in one
 *       copy. Rows past the real sequences are padding: token 0 at position 0, writing into the
 *       pools' scratch blocks and attending to them alone; their logits rows are to be ignored.</li>
 *   <li>{@link #run} (device): the model's forward from those tensors; stream work only.</li>
 *   <li>{@link #finish} (host): advances each cache by its token.</li>
 * </ul>
 */
public final class DecodeStep {

    /** A model's forward from fixed inputs: ids i32 [B], positions i32 [B], the paged tables -> logits [B, vocab]. */
    public interface Forward {
        Tensor apply(Tensor ids, Tensor positions, PagedDecode paged);
    }

    private final Backend backend;
    private final BlockPool pool;
    private final BlockPool windowPool;   // null: the pool holds every layer
    private final int batch;
    private final int maxBlocks;
    private final int maxPositions;
    private final Forward forward;
    // i32 [B·(4 + maxBlocks)] on the host: ids, positions, slots, lens, tables; then, with a window pool, its slots [B]
    // and tables [B, maxBlocks]
    private final Tensor host;
    private final Tensor packed;     // the same on the backend, written by one copy per step
    private final Tensor ids;        // i32 [B]
    private final Tensor positions;  // i32 [B]
    private final PagedDecode paged; // slots [B], tables [B, maxBlocks], lens [B]

    /**
     * @param pool         a pool with a scratch block ({@link BlockPool#scratchBlock}); one that stores no values (a
     *                     latent cache) too
     * @param maxBlocks    the width of the block tables: at least the blocks of any sequence of a step
     * @param maxPositions positions at or beyond it are an error (as in the model's forward)
     */
    public DecodeStep(Backend backend, BlockPool pool, int batch, int maxBlocks, int maxPositions, Forward forward) {
        this(backend, pool, null, batch, maxBlocks, maxPositions, forward);
    }

    /**
     * As above, over sequences whose sliding-window layers keep their rows in {@code windowPool} (null: none), which
     * needs a scratch block too.
     */
    public DecodeStep(Backend backend, BlockPool pool, BlockPool windowPool, int batch, int maxBlocks, int maxPositions,
                      Forward forward) {
        if (pool.scratchBlock() < 0 || batch <= 0 || maxBlocks <= 0 || windowPool != null && windowPool.scratchBlock() < 0) {
            throw new IllegalArgumentException("a decode step needs a pool (and a window pool, where it has one) with a"
                    + " scratch block, batch and table width > 0; got scratch block " + pool.scratchBlock()
                    + (windowPool == null ? "" : " and " + windowPool.scratchBlock() + " in the window pool") + ", batch " + batch
                    + ", width " + maxBlocks);
        }
        this.backend = backend;
        this.pool = pool;
        this.windowPool = windowPool;
        this.batch = batch;
        this.maxBlocks = maxBlocks;
        this.maxPositions = maxPositions;
        this.forward = forward;
        long main = (long) batch * (4 + maxBlocks);
        long n = main + (windowPool == null ? 0 : (long) batch * (1 + maxBlocks));
        this.host = Tensor.allocate(Arena.ofAuto(), DType.I32, n);
        this.packed = backend.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.I32, n);
        this.ids = packed.slice(0, 0, batch);
        this.positions = packed.slice(0, batch, 2L * batch);
        Tensor slots = packed.slice(0, 2L * batch, 3L * batch);
        Tensor lens = packed.slice(0, 3L * batch, 4L * batch);
        Tensor tables = packed.slice(0, 4L * batch, main).reshape(batch, maxBlocks);
        this.paged = windowPool == null ? new PagedDecode(pool, batch, slots, tables, lens)
                : new PagedDecode(pool, batch, slots, tables, lens, windowPool, packed.slice(0, main, main + batch),
                packed.slice(0, main + batch, n).reshape(batch, maxBlocks));
    }

    /**
     * The blocks the widest sequence of {@code segments} holds once it has room for its token, when
     * every segment feeds one token into a {@link PagedSequence} of {@code pool} without a window pool; -1 otherwise.
     */
    public static int blocksAfterReserve(List<CausalLM.Segment> segments, BlockPool pool) {
        return blocksAfterReserve(segments, pool, null);
    }

    /** As above, every sequence's sliding-window layers in {@code windowPool} (null: none). */
    public static int blocksAfterReserve(List<CausalLM.Segment> segments, BlockPool pool, BlockPool windowPool) {
        int widest = 1;
        for (CausalLM.Segment s : segments) {
            if (s.tokens().length != 1 || !(s.cache() instanceof PagedSequence p) || p.pool() != pool
                    || p.windowPool() != windowPool) {
                return -1;
            }
            widest = Math.max(widest, Math.max(p.blocks(), p.length() / pool.blockSize() + 1));
        }
        return segments.isEmpty() ? -1 : widest;
    }

    public int batch() {
        return batch;
    }

    public int maxBlocks() {
        return maxBlocks;
    }

    /** Host side: reserves room for each segment's token and writes the step's inputs with one host-to-device copy. */
    public void prepare(List<CausalLM.Segment> segments) {
        int n = segments.size();
        int widest = blocksAfterReserve(segments, pool, windowPool);
        if (n > batch || widest < 0 || widest > maxBlocks) {
            throw new IllegalArgumentException("decode step of batch " + batch + " and table width " + maxBlocks + " cannot take "
                    + n + " segments needing " + widest + " blocks");
        }
        int bs = pool.blockSize();
        int scratch = pool.scratchBlock();
        int main = batch * (4 + maxBlocks);
        int[] v = new int[main + (windowPool == null ? 0 : batch * (1 + maxBlocks))];
        int tables = 4 * batch;
        int windowTables = main + batch;
        for (int i = 0; i < batch; i++) {
            if (i >= n) {                                   // padding row: the scratch block alone
                v[2 * batch + i] = scratch * bs;
                v[3 * batch + i] = 1;
                java.util.Arrays.fill(v, tables + i * maxBlocks, tables + (i + 1) * maxBlocks, scratch);
                if (windowPool != null) {
                    int ws = windowPool.scratchBlock();
                    v[main + i] = ws * bs;
                    java.util.Arrays.fill(v, windowTables + i * maxBlocks, windowTables + (i + 1) * maxBlocks, ws);
                }
                continue;
            }
            CausalLM.Segment s = segments.get(i);
            PagedSequence p = (PagedSequence) s.cache();
            int pos = p.length();
            if (pos >= maxPositions) {
                throw new IllegalArgumentException("position " + pos + " is beyond max_position_embeddings " + maxPositions);
            }
            p.reserve(1);
            v[i] = s.tokens()[0];
            v[batch + i] = pos;
            v[2 * batch + i] = p.block(pos / bs) * bs + pos % bs;
            v[3 * batch + i] = pos + 1;
            for (int j = 0; j < maxBlocks; j++) {
                v[tables + i * maxBlocks + j] = j < p.blocks() ? p.block(j) : scratch;
            }
            if (windowPool != null) {   // given-back and unused entries: the block of zeros, as PagedDecode.of has them
                v[main + i] = p.windowBlock(pos / bs) * bs + pos % bs;
                for (int j = 0; j < maxBlocks; j++) {
                    v[windowTables + i * maxBlocks + j] = j < p.blocks() ? p.windowBlock(j) : windowPool.holeBlock();
                }
            }
        }
        java.lang.foreign.MemorySegment.copy(v, 0, host.segment(),
                java.lang.foreign.ValueLayout.JAVA_INT_UNALIGNED.withOrder(java.nio.ByteOrder.LITTLE_ENDIAN), 0, v.length);
        backend.allocator().copy(host, packed);             // the step's one host-to-device copy
    }

    /** Device side: logits [B, vocab] from the fixed inputs. Stream work only: capturable. */
    public Tensor run() {
        return forward.apply(ids, positions, paged);
    }

    /** Host side, after the step's work is issued: each segment's cache advances by its token. */
    public void finish(List<CausalLM.Segment> segments) {
        for (CausalLM.Segment s : segments) {
            s.cache().advance(1);
        }
    }
}
