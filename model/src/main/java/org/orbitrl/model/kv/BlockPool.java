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
        this.keys = new Tensor[layers];
        this.values = new Tensor[layers];
        long rows = (long) (scratch ? blocks + 1 : blocks) * blockSize;
        for (int l = 0; l < layers && kvHeads * headDim > 0; l++) {   // no rows: a model that keeps its own decode state
            keys[l] = allocator.allocate(MemoryCategory.KV_CACHE, dtype, rows, (long) kvHeads * headDim);
            values[l] = vHeadDim == 0 ? null : allocator.allocate(MemoryCategory.KV_CACHE, dtype, rows, (long) kvHeads * vHeadDim);
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

    /** Bytes of cache one token occupies across all layers (keys and values, f32). */
    public static long bytesPerToken(int layers, int kvHeads, int headDim, int vHeadDim) {
        return bytesPerToken(layers, kvHeads, headDim, vHeadDim, DType.F32);
    }

    /** Bytes of cache one token occupies across all layers (keys and values of {@code dtype}). */
    public static long bytesPerToken(int layers, int kvHeads, int headDim, int vHeadDim, DType dtype) {
        return (long) layers * kvHeads * (headDim + vHeadDim) * dtype.bytes();
    }

    public long bytesPerToken() {
        return bytesPerToken(layers, kvHeads, headDim, vHeadDim, dtype);
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
        for (int l = 0; l < layers && keys[l] != null; l++) {
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
