package org.orbitrl.model.kv;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.util.ArrayDeque;

/**
 * The paged KV cache's memory: per layer, one pool of fixed-size blocks of keys and values shared
 * by every sequence of a rollout engine. Blocks are reference-counted so that the G samples of a
 * prompt share the prompt's blocks (a block is copied before a shared one is written: copy on
 * write). Not thread-safe: one engine thread owns it. With {@code vHeadDim} 0 no values are
 * stored: attention takes them from the leading key channels (multi-head latent attention).
 *
 * <p>A pool may hold some layers only. A model whose sliding-window layers keep a few positions each ({@link #window})
 * gets two: one for its full-attention layers, whose sequences hold every position, and a window pool for the sliding
 * ones, from which a sequence gives back each block that has left every future query's window
 * ({@link PagedSequence}). A window pool has one more block of zeros, the {@link #holeBlock}, that stands for the given
 * back positions when attention gathers a sequence's rows: the window masks them, and zeros keep the masked terms
 * exactly zero.
 */
public final class BlockPool {
    private final TensorAllocator allocator;
    private final int layers;
    private final int kvHeads;
    private final int headDim;
    private final int vHeadDim;
    private final int blockSize;
    private final int blocks;
    private final DType dtype;
    private final Tensor[] keys;     // per layer [blocks*blockSize, kvHeads*headDim]
    private final Tensor[] values;   // per layer [blocks*blockSize, kvHeads*vHeadDim]
    private final int[] refs;
    private final ArrayDeque<Integer> free = new ArrayDeque<>();
    private final boolean scratch;
    private final boolean[] holds;   // the layers whose rows this pool keeps
    private final int window;        // the sliding window of those layers; 0: they see every position

    public BlockPool(TensorAllocator allocator, int layers, int kvHeads, int headDim, int vHeadDim, int blockSize, int blocks) {
        this(allocator, layers, kvHeads, headDim, vHeadDim, blockSize, blocks, false);
    }

    /**
     * As above; with {@code scratch}, one more block that no sequence ever owns ({@link #scratchBlock}):
     * where the padding rows of a fixed-size decode batch write their keys and values.
     */
    public BlockPool(TensorAllocator allocator, int layers, int kvHeads, int headDim, int vHeadDim, int blockSize, int blocks,
                     boolean scratch) {
        this(allocator, layers, kvHeads, headDim, vHeadDim, blockSize, blocks, scratch, DType.F32);
    }

    /**
     * As above, the keys and values held as {@code dtype}: f32, or bf16 (half the memory; each value rounded to nearest
     * even as it is written, read back exactly; not in exact mode, whose steps must equal the training forward).
     */
    public BlockPool(TensorAllocator allocator, int layers, int kvHeads, int headDim, int vHeadDim, int blockSize, int blocks,
                     boolean scratch, DType dtype) {
        this(allocator, layers, kvHeads, headDim, vHeadDim, blockSize, blocks, scratch, dtype, null, 0);
    }

    /**
     * As above, keeping the rows of the layers {@code holds} marks only (null: every layer); with {@code window} > 0 those
     * layers attend over the last {@code window} positions only (a window pool, with its {@link #holeBlock}).
     */
    public BlockPool(TensorAllocator allocator, int layers, int kvHeads, int headDim, int vHeadDim, int blockSize, int blocks,
                     boolean scratch, DType dtype, boolean[] holds, int window) {
        if (holds != null && holds.length != layers) {
            throw new IllegalArgumentException("a pool of " + layers + " layers given " + holds.length + " layer flags");
        }
        if (window < 0) {
            throw new IllegalArgumentException("a pool's window must be >= 0, got " + window);
        }
        if (blockSize <= 0 || blocks <= 0) {
            throw new IllegalArgumentException("block size and count must be positive, got " + blockSize + ", " + blocks);
        }
        if (dtype != DType.F32 && dtype != DType.BF16) {
            throw new IllegalArgumentException("a KV cache holds f32 or bf16 values, not " + dtype);
        }
        this.dtype = dtype;
        this.allocator = allocator;
        this.layers = layers;
        this.kvHeads = kvHeads;
        this.headDim = headDim;
        this.vHeadDim = vHeadDim;
        this.blockSize = blockSize;
        this.blocks = blocks;
        this.scratch = scratch;
        this.window = window;
        this.holds = new boolean[layers];
        this.keys = new Tensor[layers];
        this.values = new Tensor[layers];
        long rows = (long) (blocks + (scratch ? 1 : 0) + (window > 0 ? 1 : 0)) * blockSize;
        for (int l = 0; l < layers; l++) {
            this.holds[l] = holds == null || holds[l];
            if (!this.holds[l] || kvHeads * headDim == 0) {   // no rows: another pool's layer, or a model with its own state
                continue;
            }
            keys[l] = allocator.allocate(MemoryCategory.KV_CACHE, dtype, rows, (long) kvHeads * headDim);
            values[l] = vHeadDim == 0 ? null : allocator.allocate(MemoryCategory.KV_CACHE, dtype, rows, (long) kvHeads * vHeadDim);
            if (window > 0) {
                long hole = (long) holeBlock() * blockSize;
                allocator.zero(keys[l].slice(0, hole, hole + blockSize));
                if (values[l] != null) {
                    allocator.zero(values[l].slice(0, hole, hole + blockSize));
                }
            }
        }
        this.refs = new int[blocks];
        for (int b = 0; b < blocks; b++) {
            free.add(b);
        }
    }

    /** Where the blocks live; copies into and between blocks go through it. */
    TensorAllocator allocator() {
        return allocator;
    }

    /** Whether this pool keeps the rows of layer {@code layer}. */
    public boolean holds(int layer) {
        return holds[layer];
    }

    /** The sliding window of the layers this pool keeps, in positions; 0 when they see every position. */
    public int window() {
        return window;
    }

    /** The block of zeros that stands for given-back positions of a window pool; -1 for a pool without a window. */
    public int holeBlock() {
        return window > 0 ? blocks + (scratch ? 1 : 0) : -1;
    }

    /** Layers whose rows this pool keeps. */
    public int heldLayers() {
        int n = 0;
        for (boolean h : holds) {
            n += h ? 1 : 0;
        }
        return n;
    }

    /** Bytes of cache one token occupies across all layers (keys and values, f32). */
    public static long bytesPerToken(int layers, int kvHeads, int headDim, int vHeadDim) {
        return bytesPerToken(layers, kvHeads, headDim, vHeadDim, DType.F32);
    }

    /** Bytes of cache one token occupies across all layers (keys and values of {@code dtype}). */
    public static long bytesPerToken(int layers, int kvHeads, int headDim, int vHeadDim, DType dtype) {
        return (long) layers * kvHeads * (headDim + vHeadDim) * dtype.bytes();
    }

    /** Bytes of cache one position of a block occupies across the layers this pool keeps. */
    public long bytesPerToken() {
        return bytesPerToken(heldLayers(), kvHeads, headDim, vHeadDim, dtype);
    }

    /** The element type of the keys and values: f32 or bf16. */
    public DType dtype() {
        return dtype;
    }

    public int blockSize() {
        return blockSize;
    }

    public int capacityBlocks() {
        return blocks;
    }

    /** The block no sequence owns (index {@link #capacityBlocks()}), for padding rows; -1 when the pool has none. */
    public int scratchBlock() {
        return scratch ? blocks : -1;
    }

    public int freeBlocks() {
        return free.size();
    }

    public int layers() {
        return layers;
    }

    public int kvHeads() {
        return kvHeads;
    }

    public int headDim() {
        return headDim;
    }

    public int vHeadDim() {
        return vHeadDim;
    }

    /** A fresh block with one reference, or -1 when the pool is exhausted. */
    int allocate() {
        Integer b = free.poll();
        if (b == null) {
            return -1;
        }
        refs[b] = 1;
        return b;
    }

    void retain(int block) {
        if (refs[block] <= 0) {
            throw new IllegalStateException("retain of free block " + block);
        }
        refs[block]++;
    }

    void release(int block) {
        if (refs[block] <= 0) {
            throw new IllegalStateException("release of free block " + block);
        }
        if (--refs[block] == 0) {
            free.add(block);
        }
    }

    int refs(int block) {
        return refs[block];
    }

    /** Copies the first {@code rows} positions of block {@code src} into {@code dst}, every layer. */
    void copy(int src, int dst, int rows) {
        for (int l = 0; l < layers; l++) {
            if (keys[l] == null) {
                continue;
            }
            allocator.copy(keys[l].slice(0, (long) src * blockSize, (long) src * blockSize + rows),
                    keys[l].slice(0, (long) dst * blockSize, (long) dst * blockSize + rows));
            if (values[l] != null) {
                allocator.copy(values[l].slice(0, (long) src * blockSize, (long) src * blockSize + rows),
                        values[l].slice(0, (long) dst * blockSize, (long) dst * blockSize + rows));
            }
        }
    }

    Tensor keys(int layer) {
        return keys[layer];
    }

    Tensor values(int layer) {
        return values[layer];
    }
}
