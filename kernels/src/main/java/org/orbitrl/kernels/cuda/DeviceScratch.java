package org.orbitrl.kernels.cuda;

/**
 * The device memory the CUDA backend keeps for itself between operations, as closed forms of the
 * shapes, for the memory planner: each is a buffer grown to the largest request and reused by
 * later calls (all work is on one stream), counted as activations by {@link CudaAllocator}.
 * Pure arithmetic: nothing here touches a device.
 *
 * <ul>
 *   <li><b>GEMM staging</b> ({@link #stagingBytes}): a dense bf16 product rounds its f32 operand
 *       ({@code x} of {@code y = x·wᵀ}, {@code dy} of {@code dx = dy·w}) to bf16 first. Rows of at
 *       most {@link #STAGING_BYTES} are staged at a time: an operand that is larger (the LM head's
 *       {@code dy [tokens, vocab]}) is taken in row chunks, one cuBLAS product each, and the buffer
 *       is then exactly {@link #STAGING_BYTES}.</li>
 *   <li><b>Attention backward</b> ({@link #attentionBackwardBytes}): the rows' log-sum-exp and
 *       delta {@code [2, T, Hq]} and, when the group's query heads are split across blocks, the
 *       splits' partial dk and dv {@code [splits, S, Hkv, D + Dv]}, f32; and where the default
 *       tensor-core variant stages bf16 copies ({@code bf16v3}, {@code bf16v4}), those of q, dout, k and v
 *       ({@link CudaMmaAttention#stagingElements}), bf16, a buffer of their own.</li>
 *   <li><b>RoPE tables</b> ({@link #ropeTableBytes}): cos and sin {@code [maxPositions, rotary/2]}
 *       f32, uploaded once per table.</li>
 *   <li><b>Exact mode</b> ({@link #EXACT_SPLIT_BYTES}, {@link #exactPlaneBytes}, {@link #exactAttentionBackwardBytes}):
 *       no bf16 staging; the products' split sums, a bf16 weight's transposed plane for its activation gradient,
 *       the tiled attention backward's scratch.</li>
 * </ul>
 * Every size is rounded as the allocator rounds it ({@link #allocationBytes}).
 */
public final class DeviceScratch {
    /** Largest bf16 staging of a product's f32 operand: 256 MiB (row chunks beyond it). */
    public static final long STAGING_BYTES = 256L << 20;
    // the staging limit in force: STAGING_BYTES, lowered only by tests of the chunked products
    private static volatile long staging = STAGING_BYTES;

    private DeviceScratch() {
    }

    /** Bytes the allocator takes for {@code elements} values of {@code elementBytes} each (at least 1024 values, 256-byte granules). */
    public static long allocationBytes(long elements, int elementBytes) {
        long bytes = Math.max(1024, elements) * elementBytes;
        return (bytes + CudaAllocator.ALIGN - 1) / CudaAllocator.ALIGN * CudaAllocator.ALIGN;
    }

    /** Sets the staging limit (tests: a small one makes small products take the chunked path); returns the previous one. */
    static long stagingLimit(long bytes) {
        if (bytes < 2) {
            throw new IllegalArgumentException("staging limit of " + bytes + " bytes holds no bf16 value");
        }
        long old = staging;
        staging = bytes;
        return old;
    }

    /** Rows of an f32 operand {@code [rows, cols]} staged in bf16 at a time: all of them when they fit, else as many as fit (at least 1). */
    static long stagingRows(long rows, long cols) {
        long fit = Math.max(1, staging / 2 / Math.max(1, cols));
        return Math.min(rows, fit);
    }

    /**
     * bf16 values of staging a product of an f32 operand {@code [rows, cols]} asks for: the operand's
     * when it fits in {@link #STAGING_BYTES}, else the whole staging (or one row when a row is larger).
     */
    static long stagingElements(long rows, long cols) {
        long all = rows * cols;
        long limit = staging;
        return all * 2 <= limit ? all : Math.max(limit / 2, cols);
    }

    /**
     * Bytes of the staging buffer after products of f32 operands of {@code shapes} ({@code {rows, cols}}
     * each): the buffer grows to the largest request.
     */
    public static long stagingBytes(long[]... shapes) {
        long most = 0;
        for (long[] s : shapes) {
            if (s[0] > 0 && s[1] > 0) {
                most = Math.max(most, stagingElements(s[0], s[1]));
            }
        }
        return most == 0 ? 0 : allocationBytes(most, 2);
    }

    /**
     * Bytes of the attention backward's scratch for {@code t} queries against {@code s} keys with
     * {@code hq} query heads, {@code hkv} kv heads and head dims {@code d} (q, k) and {@code dv} (v).
     */
    public static long attentionBackwardBytes(int t, int s, int hq, int hkv, int d, int dv) {
        return attentionBackwardBytes(t, s, hq, hkv, d, dv, d == dv && (d == 64 || d == 128));
    }

    /** {@link #attentionBackwardBytes}, with or without the tensor-core kernels (their splits and bf16 staging). */
    private static long attentionBackwardBytes(int t, int s, int hq, int hkv, int d, int dv, boolean tensorCores) {
        if ((long) t * hq == 0 || s == 0) {
            return 0;
        }
        long items = (long) t * hq;
        long parts = 0;
        long staged = tensorCores ? CudaMmaAttention.stagingElements(CudaMmaAttention.DEFAULT, t, s, hq, hkv, d) : 0;
        if (CudaTiledAttentionBackward.fits(d, dv)) {
            int splits = CudaTiledAttentionBackward.splits(s, hq, hkv);
            if (tensorCores) {
                splits = Math.max(splits, CudaMmaAttention.maxSplits(s, hq, hkv));
            }
            parts = splits > 1 ? (long) splits * s * hkv * (d + dv) : 0;
        }
        return allocationBytes(2 * items + parts, 4) + (staged > 0 ? allocationBytes(staged, 2) : 0);
    }

    /**
     * Bytes of the tensor-core attention forward's scratch for {@code s} keys with {@code hkv} kv heads
     * and head dims {@code d} = {@code dv}: the bf16 copies of k and v where the default variant stages
     * them ({@code bf16v4}), else 0. The backward's scratch ({@link #attentionBackwardBytes}) is the
     * same buffer and at least as large.
     */
    public static long attentionForwardBytes(int s, int hkv, int d, int dv) {
        if (d != dv || (d != 64 && d != 128) || s == 0) {
            return 0;
        }
        long staged = CudaMmaAttention.forwardStagingElements(CudaMmaAttention.DEFAULT, s, hkv, d);
        return staged > 0 ? allocationBytes(staged, 2) : 0;
    }

    /** Exact mode's split sums of a product at most ({@link CudaExactOps#rowsPerLaunch}'s bound by default). */
    public static final long EXACT_SPLIT_BYTES = CudaExactOps.SPLIT_BYTES;

    /** Bytes of exact mode's bf16 plane of a bf16 weight of {@code elements} values (its transpose, for dx = dy · w). */
    public static long exactPlaneBytes(long elements) {
        return elements == 0 ? 0 : allocationBytes(elements, 2);
    }

    /**
     * Bytes of exact mode's attention backward scratch for {@code t} queries against {@code s} keys: the tiled kernels'
     * (log-sum-exp and delta, and the split partial dk and dv), without the tensor-core kernels' bf16 staging.
     */
    public static long exactAttentionBackwardBytes(int t, int s, int hq, int hkv, int d, int dv) {
        return attentionBackwardBytes(t, s, hq, hkv, d, dv, false);
    }

    /** Bytes of one RoPE table on the device: cos and sin, {@code [maxPositions, rotaryDim / 2]} f32 each. */
    public static long ropeTableBytes(int maxPositions, int rotaryDim) {
        return 2 * allocationBytes((long) maxPositions * (rotaryDim / 2), 4);
    }
}
