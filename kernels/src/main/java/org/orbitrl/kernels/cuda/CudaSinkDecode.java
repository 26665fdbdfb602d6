package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

/**
 * DeepSeek V4's attention at a decode step ({@link org.orbitrl.kernels.Backend#sinkDecodeAttention}), every sequence of
 * the step in one or two launches ({@code mqa.cu}'s {@code mqa_sink_decode} and {@code mqa_sink_decode_merge}): one
 * query a sequence over its keys (its window's rows, its new key, then its compressed entries, all or those its indexer
 * chose), listed for the kernel in a table of device addresses uploaded by one copy, each sequence's keys split over
 * several blocks where the sequences alone would leave the device idle. Outside exact mode only.
 */
final class CudaSinkDecode {
    private final CudaContext ctx;
    private final Kernel sinkDecode;
    private final Kernel sinkDecodeMerge;
    private final DeviceTable decodeTable;   // per sequence 6 words, then the chosen indices

    CudaSinkDecode(CudaContext ctx) {
        this.ctx = ctx;
        this.sinkDecode = ctx.kernel("mqa", "mqa_sink_decode");
        this.sinkDecodeMerge = ctx.kernel("mqa", "mqa_sink_decode_merge");
        this.decodeTable = new DeviceTable(ctx, "sink decode table");
    }

    /** Whether a device tensor starts on a 16-byte boundary (the decode kernel's rows are read and written 16 bytes at a time). */
    private static boolean aligned16(Tensor t) {
        return CudaAllocator.address(t) % 16 == 0;
    }

    /** Head widths {@link #attend} takes: multiples of 32 up to this. */
    static final int DECODE_MAX_DIM = 512;

    /**
     * Whether {@link org.orbitrl.kernels.Backend#sinkDecodeAttention} takes these operands here: f32 and contiguous, q
     * [B, H, d], k [B, d], each window and entry set [rows, d], a chosen index within its set, sinks [H], out [B, H, d],
     * d a multiple of 32 up to {@link #DECODE_MAX_DIM}, k, out and the keys' rows 16-byte aligned; not with
     * {@code -Dorbit.cuda.mqa=off}. Throws, naming the operand, for shapes that do not agree.
     */
    static boolean fits(Tensor q, Tensor[] windows, Tensor k, Tensor[] entries, int[][] chosen, Tensor sinks,
                                  Tensor out) {
        int b = q.rank() == 3 ? q.size(0) : -1;
        if (b < 0 || k.rank() != 2 || k.size(0) != b || k.size(1) != q.size(2) || sinks.rank() != 1
                || sinks.size(0) != q.size(1) || !java.util.Arrays.equals(out.shape(), q.shape()) || windows.length != b
                || entries.length != b || chosen.length != b) {
            throw new IllegalArgumentException("sink decode attention: expected q [B, H, d], k [B, d], sinks [H], out [B, H, d]"
                    + " and B windows, entry sets and choices; got q " + java.util.Arrays.toString(q.shape()) + ", k "
                    + java.util.Arrays.toString(k.shape()) + ", sinks " + java.util.Arrays.toString(sinks.shape()) + ", out "
                    + java.util.Arrays.toString(out.shape()) + ", " + windows.length + " windows, " + entries.length
                    + " entry sets, " + chosen.length + " choices");
        }
        int d = q.size(2);
        for (int i = 0; i < b; i++) {
            for (Tensor t : new Tensor[]{windows[i], entries[i]}) {
                if (t != null && (t.rank() != 2 || t.size(1) != d)) {
                    throw new IllegalArgumentException("sink decode attention: sequence " + i + "'s keys must be [rows, " + d
                            + "], got " + java.util.Arrays.toString(t.shape()));
                }
            }
            int m = entries[i] == null ? 0 : entries[i].size(0);
            if (chosen[i] != null) {
                for (int e : chosen[i]) {
                    if (e < 0 || e >= m) {
                        throw new IllegalArgumentException("sink decode attention: sequence " + i + " chose entry " + e
                                + " of " + m);
                    }
                }
            }
        }
        if (CudaMqaAttention.off() || d == 0 || d % 32 != 0 || d > DECODE_MAX_DIM || !CudaMqaAttention.f32Contiguous(q, k, sinks, out) || !aligned16(k) || !aligned16(out)) {
            return false;
        }
        for (int i = 0; i < b; i++) {
            for (Tensor t : new Tensor[]{windows[i], entries[i]}) {
                if (t != null && (!CudaMqaAttention.f32Contiguous(t) || !aligned16(t))) {
                    return false;
                }
            }
        }
        return true;
    }

    /** Heads a block of {@code mqa_sink_decode} takes, a warp each (its SINK_HEADS). */
    private static final int DECODE_HEADS = 8;
    /** Keys a shared-memory tile of {@code mqa_sink_decode} holds (its SINK_TILE); two tiles are in flight. */
    private static final int DECODE_TILE = 16;
    /** Keys a split of {@link #attend} takes at least: two tiles, so that the copy of one overlaps the other's work. */
    static final int DECODE_SPLIT_KEYS = 2 * DECODE_TILE;
    /**
     * {@code -Dorbit.cuda.sinkDecodeSplits=N} (read at each call): every sequence's keys split over N blocks instead of
     * {@link #decodeSplits(int, int, int, int)}'s count; for tests (splits with no keys, the merge at any batch).
     */
    static final String DECODE_SPLITS_PROPERTY = "orbit.cuda.sinkDecodeSplits";

    /**
     * The key splits of {@link #attend}: one where {@code batch} sequences' blocks of 8 heads already give each of
     * the device's {@code multiprocessors} two blocks (two fit at once: registers, and two tiles of shared memory
     * each); else as many as keep the blocks within that, each split at least {@link #DECODE_SPLIT_KEYS} of the longest
     * sequence's {@code maxKeys}.
     */
    static int decodeSplits(int batch, int heads, int maxKeys, int multiprocessors) {
        long base = (long) batch * ((heads + DECODE_HEADS - 1) / DECODE_HEADS);
        long target = 2L * multiprocessors;
        if (base >= target) {
            return 1;
        }
        return (int) Math.max(1, Math.min(target / base, (maxKeys + DECODE_SPLIT_KEYS - 1) / DECODE_SPLIT_KEYS));
    }

    /** {@link #DECODE_SPLITS_PROPERTY}'s count where set (checked), else {@link #decodeSplits(int, int, int, int)}'s. */
    private int decodeSplits(int batch, int heads, int maxKeys) {
        String set = System.getProperty(DECODE_SPLITS_PROPERTY);
        if (set == null) {
            return decodeSplits(batch, heads, maxKeys, ctx.device.multiprocessors());
        }
        int most = 65535 / ((heads + DECODE_HEADS - 1) / DECODE_HEADS);   // the grid's y: head blocks times splits
        int n;
        try {
            n = Integer.parseInt(set.trim());
        } catch (NumberFormatException e) {
            n = 0;
        }
        if (n < 1 || n > most) {
            throw new IllegalArgumentException("-D" + DECODE_SPLITS_PROPERTY + "=" + set + ": expected a split count of 1 to "
                    + most + " for " + heads + " heads");
        }
        return n;
    }

    /**
     * DeepSeek V4's decode attention ({@link org.orbitrl.kernels.Backend#sinkDecodeAttention}) over a table of each
     * sequence's key rows, uploaded by one copy ({@code mqa_sink_decode}): a block a (sequence, 8 heads, key split),
     * {@link #decodeSplits(int, int, int, int)} splits. One split writes out; several write partials [B, H, splits, d] and
     * [B, H, splits, {max, sum}] to scratch, which {@code mqa_sink_decode_merge} combines with the sinks into out. Two
     * launches at most and no host read, but the table and the split count are made on the host at each call (from the
     * sequences' rows), so a captured call would replay them as they were. The split count follows the batch and its
     * longest sequence: a sequence's bits depend on which sequences share its call (exact mode does not take this path).
     */
    void attend(Tensor q, Tensor[] windows, Tensor k, Tensor[] entries, int[][] chosen, Tensor sinks, float scale,
                    Tensor out) {
        int b = q.size(0);
        int heads = q.size(1);
        int d = q.size(2);
        if (b == 0 || heads == 0) {
            return;
        }
        long words = 6L * b;
        for (int[] c : chosen) {
            words += c == null ? 0 : c.length;
        }
        java.lang.foreign.MemorySegment h = decodeTable.host(words);
        long at = 6L * b;
        int maxKeys = 0;
        for (int i = 0; i < b; i++) {
            long row = 6L * i;
            int rows = windows[i] == null ? 0 : windows[i].size(0);
            int m = entries[i] == null ? 0 : entries[i].size(0);
            int picked = chosen[i] == null ? m : chosen[i].length;
            maxKeys = Math.max(maxKeys, rows + 1 + picked);
            h.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, row, windows[i] == null ? 0L : CudaAllocator.address(windows[i]));
            h.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, row + 1, rows);
            h.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, row + 2, entries[i] == null ? 0L : CudaAllocator.address(entries[i]));
            h.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, row + 3, m);
            h.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, row + 4, chosen[i] == null ? -1L : at);
            h.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, row + 5, picked);
            if (chosen[i] != null) {
                for (int e : chosen[i]) {
                    h.setAtIndex(java.lang.foreign.ValueLayout.JAVA_LONG, at++, e);
                }
            }
        }
        int splits = decodeSplits(b, heads, maxKeys);
        long table = decodeTable.upload(h, words);
        Tensor partAcc = null;
        Tensor partMl = null;
        if (splits > 1) {
            long parts = (long) b * heads * splits;
            partAcc = ctx.scratch(CudaContext.Scratch.ATTENTION_ACC, DType.F32, parts * d);   // [B, H, splits, d]
            partMl = ctx.scratch(CudaContext.Scratch.ATTENTION_ML, DType.F32, parts * 2);     // [B, H, splits, {max, sum}]
        }
        int headBlocks = (heads + DECODE_HEADS - 1) / DECODE_HEADS;
        ctx.launch2dShared(sinkDecode, b, headBlocks * splits, 32 * DECODE_HEADS, 2 * DECODE_TILE * d * DType.F32.bytes(),
                q, table, k, sinks, out, heads, d, scale, splits, partAcc, partMl);
        if (splits > 1) {
            ctx.launch(sinkDecodeMerge, (long) b * heads, (d / 4 + 31) / 32 * 32, partAcc, partMl, sinks, out, heads, d,
                    splits);
        }
    }
}
