package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.PagedOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

/**
 * Decode attention over a latent paged cache ({@link org.orbitrl.kernels.Backend#pagedDecodeAttention} with no value
 * cache: the values are the first Dv channels of each key row), one launch for the batch whatever its sequences'
 * lengths, so that a decode step of DeepSeek-V3 or Kimi-K2 can be captured:
 * <ul>
 *   <li>a bf16 cache of their widths (one key head of 576 channels, values 512) outside exact mode: the tensor-core
 *   kernel of {@code paged_mla.cu} (16 query heads a block, 32-key tiles; q and the probabilities rounded to bf16),
 *   unless {@code -Dorbit.cuda.pagedMla=off} (read at each call);</li>
 *   <li>an f32 cache: the per-query kernel of {@code attention.cu} through the block tables, its value pointer the key
 *   cache itself (in exact mode with one key split and scalar loads, so that a decoded token's attention equals the
 *   same query's in an exact prefill bit for bit);</li>
 *   <li>any other bf16 cache (widths of no real model): each sequence's keys gathered and attended to in turn
 *   ({@link PagedOps}, which reads the tables on the host: such a step runs eagerly).</li>
 * </ul>
 */
final class CudaLatentDecode {
    static final int D = 576;
    static final int DV = 512;
    private static final int HEADS = 16;           // query heads a block of the tensor-core kernel
    private static final int TILE_KEYS = 32;       // ML_TK
    // at most one key split per this many keys of the tables' capacity (a multiple of TILE_KEYS; -Dorbit.cuda.mlaSplitKeys)
    private static final int SPLIT_KEYS = Math.max(TILE_KEYS, Integer.getInteger("orbit.cuda.mlaSplitKeys", 256)
            / TILE_KEYS * TILE_KEYS);
    // ML_SHARED_BYTES of paged_mla.cu: two stages of 32 rows of 584 bf16, Q's fragments, the scores' halves, P, and
    // the rows' factors, maxima and sums
    static final int SHARED_BYTES = 2 * TILE_KEYS * (D + 8) * 2 + (D / 16) * 32 * 16 + 2 * 16 * TILE_KEYS * 4
            + 16 * (TILE_KEYS + 8) * 2 + 16 * 4 + 16 * 2 * 4;

    private final CudaContext ctx;
    private final CudaBackend backend;
    private final Kernel mla;
    private final Kernel attention;
    private final Kernel combine;

    CudaLatentDecode(CudaContext ctx, CudaBackend backend) {
        this.ctx = ctx;
        this.backend = backend;
        this.mla = ctx.kernel("paged_mla", "paged_mla_decode_kvbf16");
        this.attention = ctx.kernel("attention", "attention_f32");
        this.combine = ctx.kernel("attention", "attention_combine");
    }

    /** Whether {@code -Dorbit.cuda.pagedMla} leaves the tensor-core kernel on (the default). */
    static boolean tensorCores() {
        return !"off".equals(System.getProperty("orbit.cuda.pagedMla"));
    }

    /**
     * Whether the tensor-core kernel takes these operands: a bf16 cache of one key head of {@link #D} channels, values
     * {@link #DV}, no window and no sinks, even strides and 8-byte aligned rows of q and out, a 16-byte aligned cache.
     */
    static boolean fits(Tensor q, Tensor kCache, int hkv, Tensor out, AttentionSpec spec) {
        long[] qs = q.strides();
        long[] os = out.strides();
        return kCache.dtype() == DType.BF16 && hkv == 1 && q.size(2) == D && out.size(2) == DV && kCache.dim(1) == D
                && spec.slidingWindow() == 0 && spec.sinks() == null && qs[0] % 2 == 0 && qs[1] % 2 == 0 && os[0] % 2 == 0
                && os[1] % 2 == 0 && CudaAllocator.address(q) % 8 == 0 && CudaAllocator.address(out) % 8 == 0
                && CudaAllocator.address(kCache) % 16 == 0 && kCache.dim(0) <= Integer.MAX_VALUE;
    }

    /**
     * q f32 [B, Hq, D] over the keys of kCache [rows, Hkv·D] (f32 or bf16) through tables i32 [B, maxBlocks] and lens
     * i32 [B] into out f32 [B, Hq, Dv], Dv ≤ D the values' channels (the keys' first ones).
     */
    void decode(Tensor q, Tensor kCache, Tensor tables, Tensor lens, int blockSize, int hkv, Tensor out, AttentionSpec spec,
                boolean exact) {
        check(q, kCache, tables, lens, blockSize, hkv, out);
        int b = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int dv = out.size(2);
        Tensor sinks = spec.sinks();
        if (sinks != null) {
            ctx.devContiguous("pagedDecodeAttention sinks", sinks, DType.F32);
            if (sinks.numel() != hq) {
                throw new IllegalArgumentException("pagedDecodeAttention: sinks " + sinks + " must hold one logit per query head (" + hq + ")");
            }
        }
        if (exact && kCache.dtype() != DType.F32) {
            throw new IllegalArgumentException("pagedDecodeAttention in exact mode: the KV cache must be f32 (a step must equal the"
                    + " training forward bit for bit), got " + kCache.dtype().name().toLowerCase(java.util.Locale.ROOT) + " " + kCache);
        }
        if (b == 0) {
            return;
        }
        int maxBlocks = tables.size(1);
        int maxKeys = maxBlocks * blockSize;
        // the batch rounded up to a power of two: a step padded to a captured graph's batch splits (and so sums) every row
        // as the unpadded step does; the split count depends only on the tables' capacity, so a graph stays valid as
        // sequences grow
        long padded = b <= 1 ? 1 : Integer.highestOneBit(b - 1) << 1;
        long[] qs = q.strides();
        long[] os = out.strides();
        if (!exact && tensorCores() && fits(q, kCache, hkv, out, spec)) {
            int headTiles = (hq + HEADS - 1) / HEADS;
            long base = padded * headTiles;
            int target = 2 * ctx.device.multiprocessors();     // two blocks an SM fit (registers and shared memory)
            int splits = base >= target ? 1 : (int) Math.max(1, Math.min(target / base, (maxKeys + SPLIT_KEYS - 1) / SPLIT_KEYS));
            int splitLen = ((maxKeys + splits - 1) / splits + TILE_KEYS - 1) / TILE_KEYS * TILE_KEYS;
            Tensor[] parts = partials(b, hq, dv, splits);
            ctx.launchShared(mla, (long) b * headTiles * splits, 256, SHARED_BYTES, q, qs[0], qs[1], kCache, tables, maxBlocks,
                    lens, blockSize, out, os[0], os[1], hq, headTiles, spec.scale(), splits, splitLen, parts[0], parts[1]);
            combine(parts, b, hq, dv, splits, out);
            return;
        }
        if (kCache.dtype() != DType.F32) {
            PagedOps.decodeAttention(backend, q, kCache, null, tables, lens, blockSize, hkv, out, spec);
            return;
        }
        if (d > CudaAttentionOps.MAX_HEAD_DIM) {
            throw new IllegalArgumentException("pagedDecodeAttention: head dim " + d + " exceeds " + CudaAttentionOps.MAX_HEAD_DIM);
        }
        // one block a (sequence, kv head, key split), its warps over the kv head's query heads
        int warps = Math.min(hq / hkv, 8);
        long base = padded * hkv;
        int target = 2 * ctx.device.multiprocessors();
        int splits = exact || base >= target ? 1 : (int) Math.max(1, Math.min((target + base - 1) / base, (maxKeys + 63) / 64));
        int splitLen = (maxKeys + splits - 1) / splits;
        boolean vec4 = !exact && d % 4 == 0 && CudaAllocator.address(kCache) % 16 == 0;
        Tensor[] parts = partials(b, hq, dv, splits);
        long row = (long) hkv * d;
        ctx.launchShared(attention, (long) b * hkv * splits, 32 * warps, warps * d * 4, q, qs[0], qs[1], kCache, row, (long) d,
                kCache, row, (long) d, out, os[0], os[1], b, hq, hkv, d, dv, 0, spec.slidingWindow(), spec.scale(), sinks,
                vec4 ? 1 : 0, splits, splitLen, parts[0], parts[1], tables, lens, maxBlocks, blockSize);
        combine(parts, b, hq, dv, splits, out);
    }

    /** The splits' partial accumulators [B, Hq, splits, Dv] and {max, sum} [B, Hq, splits, 2]; nulls for one split. */
    private Tensor[] partials(int b, int hq, int dv, int splits) {
        if (splits == 1) {
            return new Tensor[2];
        }
        long parts = (long) b * hq * splits;
        return new Tensor[]{ctx.scratch(CudaContext.Scratch.ATTENTION_ACC, DType.F32, parts * dv),
                ctx.scratch(CudaContext.Scratch.ATTENTION_ML, DType.F32, parts * 2)};
    }

    private void combine(Tensor[] parts, int b, int hq, int dv, int splits, Tensor out) {
        if (splits > 1) {
            long[] os = out.strides();
            ctx.launch(combine, (long) b * hq, 128, parts[0], parts[1], out, os[0], os[1], hq, dv, splits);
        }
    }

    /** q and out f32 [B, H, D|Dv] (contiguous last dimension), a contiguous cache of whole blocks, i32 tables and lens. */
    private void check(Tensor q, Tensor kCache, Tensor tables, Tensor lens, int blockSize, int hkv, Tensor out) {
        for (Object[] a : new Object[][]{{"q", q}, {"out", out}}) {
            Tensor t = (Tensor) a[1];
            ctx.dev("pagedDecodeAttention " + a[0], t);
            if (t.rank() != 3 || t.dtype() != DType.F32 || t.strides()[2] != 1) {
                throw new IllegalArgumentException("pagedDecodeAttention: " + a[0] + " must be f32 [B, H, D] with a contiguous last dimension, got " + t);
            }
        }
        ctx.devContiguous("pagedDecodeAttention key cache", kCache, null);
        if (kCache.dtype() != DType.F32 && kCache.dtype() != DType.BF16) {
            throw new IllegalArgumentException("pagedDecodeAttention: the key cache must be f32 or bf16, got " + kCache);
        }
        ctx.devContiguous("pagedDecodeAttention block tables", tables, DType.I32);
        ctx.devContiguous("pagedDecodeAttention sequence lengths", lens, DType.I32);
        int b = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        if (hkv <= 0 || hq % hkv != 0 || kCache.rank() != 2 || kCache.dim(1) != (long) hkv * d || kCache.dim(0) % blockSize != 0
                || out.dim(0) != b || out.dim(1) != hq || out.dim(2) > d || tables.rank() != 2 || tables.dim(0) != b
                || lens.numel() != b) {
            throw new IllegalArgumentException("pagedDecodeAttention over a latent cache (values the keys' leading channels): q " + q
                    + ", key cache " + kCache + " (" + hkv + " kv heads, blocks of " + blockSize + "), tables " + tables + ", lens "
                    + lens + ", out " + out + " do not agree");
        }
    }
}
