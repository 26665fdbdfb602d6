package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

import java.util.Map;
import java.util.WeakHashMap;

/**
 * Rotary embedding and causal attention on the device. Prefill (16 queries or more) outside exact
 * mode takes the tensor-core kernels ({@link CudaMmaAttention}, head dims D = Dv ∈ {64, 128},
 * {@code -Dorbit.cuda.mmaAttention=bf16v4|bf16v3|bf16v2|bf16|tf32|off} picks the variant or turns them off), else the f32 tiled kernel
 * ({@link CudaFlashAttention}) where it fits; in exact mode head dims up to 128 take the tiles of
 * {@link CudaExactAttention}, prefill and decode alike; everything else the per-query kernel of {@code attention.cu}.
 */
final class CudaAttentionOps {
    /** Largest head dimension the attention kernel takes (ATT_MAXD in attention.cu). */
    static final int MAX_HEAD_DIM = 32 * 20;

    private final CudaContext ctx;
    private final CudaBackend backend;
    // Device copies of rope tables: {cos, sin} f32 [maxPositions, rotaryDim/2], uploaded once per table.
    private final Map<RopeTable, Tensor[]> ropeTables = new WeakHashMap<>();

    private final Kernel rope;
    private final Kernel attention;
    private final Kernel combine;
    final CudaFlashAttention flash;
    /** Tensor-core prefill and backward (default mode only; see {@link CudaMmaAttention}). */
    final CudaMmaAttention mma;
    final CudaMqaAttention mqa;
    final CudaSinkDecode sinkDecode;
    /** Decode over a latent paged cache (values the keys' leading channels; DeepSeek-V3, Kimi-K2). */
    final CudaLatentDecode latent;
    /** Exact mode's tiled attention (head dims up to 128); wider heads take the per-query kernel. */
    private final CudaExactAttention exactTiles;
    /** Queries from which prefill takes the tiled kernel ({@code -Dorbit.cuda.flash=off} keeps the per-query kernel). */
    private static final int FLASH_MIN_QUERIES = "off".equals(System.getProperty("orbit.cuda.flash")) ? Integer.MAX_VALUE : 16;
    /**
     * Exact mode: one key split and scalar key loads always, so that a query's output depends on
     * its own row only (not on how many queries share the launch or on where k and v live).
     */
    boolean exact;

    CudaAttentionOps(CudaContext ctx, CudaBackend backend) {
        this.ctx = ctx;
        this.backend = backend;
        this.rope = ctx.kernel("rope", "rope_f32");
        this.attention = ctx.kernel("attention", "attention_f32");
        this.combine = ctx.kernel("attention", "attention_combine");
        this.flash = new CudaFlashAttention(ctx, this::deviceTable);
        this.mma = new CudaMmaAttention(ctx);
        this.mqa = new CudaMqaAttention(ctx, backend);
        this.sinkDecode = new CudaSinkDecode(ctx);
        this.latent = new CudaLatentDecode(ctx, backend);
        this.exactTiles = new CudaExactAttention(ctx);
    }

    void rope(Tensor x, Tensor positions, RopeTable table) {
        ctx.dev("rope x", x);
        ctx.devContiguous("rope positions", positions, null);
        if (x.rank() != 3 || x.dtype() != DType.F32 || x.strides()[2] != 1) {
            throw new IllegalArgumentException("rope: x must be f32 [T, H, D] with a contiguous last dimension, got " + x);
        }
        if (positions.dtype() != DType.I32 && positions.dtype() != DType.I64) {
            throw new IllegalArgumentException("rope: positions must be i32 or i64, got " + positions);
        }
        int t = x.size(0);
        int h = x.size(1);
        int half = table.rotaryDim() / 2;
        if (table.rotaryDim() > x.dim(2) || positions.numel() != t) {
            throw new IllegalArgumentException("rope: rotary dim " + table.rotaryDim() + " of x " + x + " with positions " + positions);
        }
        long total = (long) t * h * half;
        if (total == 0) {
            return;
        }
        Tensor[] cs = deviceTable(table);
        long[] st = x.strides();
        ctx.launch(rope, ctx.gridFor(total, 256), 256, x, st[0], st[1], t, h, half,
                table.style() == RopeTable.Style.INTERLEAVED ? 1 : 0, positions, positions.dtype() == DType.I64 ? 1 : 0,
                cs[0], cs[1], table.maxPositions(), ctx.errorFlag);
    }

    Tensor[] deviceTable(RopeTable table) {
        Tensor[] cs = ropeTables.get(table);
        if (cs == null) {
            int half = table.rotaryDim() / 2;
            cs = new Tensor[]{
                    backend.toDevice(Tensor.of(table.cosTable(), table.maxPositions(), half), MemoryCategory.ACTIVATIONS),
                    backend.toDevice(Tensor.of(table.sinTable(), table.maxPositions(), half), MemoryCategory.ACTIVATIONS)};
            ropeTables.put(table, cs);
        }
        return cs;
    }

    void attention(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec) {
        attention(q, k, v, out, queryStart, spec, null);
    }

    /** As {@link #attention(Tensor, Tensor, Tensor, Tensor, int, AttentionSpec)}, lse as {@code Backend.attentionWithStats}. */
    boolean attention(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec, Tensor lse) {
        for (Object[] a : new Object[][]{{"q", q}, {"k", k}, {"v", v}, {"out", out}}) {
            Tensor t = (Tensor) a[1];
            ctx.dev("attention " + a[0], t);
            if (t.rank() != 3 || t.dtype() != DType.F32 || t.strides()[2] != 1) {
                throw new IllegalArgumentException("attention: " + a[0] + " must be f32 rank 3 with a contiguous last dimension, got " + t);
            }
        }
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = k.size(0);
        int hkv = k.size(1);
        int dv = v.size(2);
        if (k.dim(2) != d || v.dim(0) != s || v.dim(1) != hkv || hkv == 0 || hq % hkv != 0
                || out.dim(0) != tq || out.dim(1) != hq || out.dim(2) != dv) {
            throw new IllegalArgumentException("attention: q " + q + ", k " + k + ", v " + v + ", out " + out + " do not agree");
        }
        if (queryStart < 0 || queryStart + tq > s) {
            throw new IllegalArgumentException("attention: queries reach position " + (queryStart + tq - 1)
                    + " but only " + s + " keys are given");
        }
        if (d > MAX_HEAD_DIM || dv > MAX_HEAD_DIM) {
            throw new IllegalArgumentException("attention: head dims " + d + "/" + dv + " exceed " + MAX_HEAD_DIM);
        }
        Tensor sinks = spec.sinks();
        if (sinks != null) {
            ctx.devContiguous("attention sinks", sinks, DType.F32);
            if (sinks.numel() != hq) {
                throw new IllegalArgumentException("attention: sinks " + sinks + " must hold one logit per query head (" + hq + ")");
            }
        }
        if (lse != null) {
            ctx.devContiguous("attention lse", lse, DType.F32);
            if (lse.numel() != (long) tq * hq) {
                throw new IllegalArgumentException("attention: lse " + lse + " must hold one value per query and head ("
                        + tq + " x " + hq + ")");
            }
        }
        if ((long) tq * hq == 0) {
            return false;
        }
        if (!exact && tq >= FLASH_MIN_QUERIES && CudaMmaAttention.enabled() && CudaMmaAttention.fits(q, k, v)) {
            return mma.prefill(q, k, v, out, queryStart, spec, lse);
        }
        if (!exact && tq >= FLASH_MIN_QUERIES && CudaFlashAttention.prefillFits(q, k, v, out)) {
            flash.prefill(q, k, v, out, queryStart, spec);
            return false;
        }
        if (!exact && CudaMqaAttention.fits(q, k, v, spec, out)) {   // one wide shared head (latent attention)
            mqa.forward(q, k, v, out, queryStart, spec);
            return false;
        }
        if (exact && CudaExactAttention.fits(d, dv)) {
            exactTiles.prefill(q, k, v, out, queryStart, spec, lse);
            return lse != null;
        }
        // One block per (query, kv head, key split); its warps take the query heads of the kv head.
        // Few queries (decode) split the keys so that the device has at least two blocks per SM.
        int group = hq / hkv;
        int warps = Math.min(group, 8);
        long base = (long) tq * hkv;
        int keys = queryStart + tq;
        int target = 2 * ctx.device.multiprocessors();
        int splits = exact || base >= target ? 1 : (int) Math.max(1, Math.min((target + base - 1) / base, (keys + 63) / 64));
        int splitLen = (keys + splits - 1) / splits;
        Tensor partAcc = null;
        Tensor partMl = null;
        if (splits > 1) {
            long parts = (long) tq * hq * splits;
            partAcc = ctx.scratch(CudaContext.Scratch.ATTENTION_ACC, DType.F32, parts * dv); // [T, Hq, splits, Dv]
            partMl = ctx.scratch(CudaContext.Scratch.ATTENTION_ML, DType.F32, parts * 2);    // [T, Hq, splits, {max, sum}]
        }
        long[] qs = q.strides();
        long[] ks = k.strides();
        long[] vs = v.strides();
        long[] os = out.strides();
        boolean vec4 = !exact && d % 4 == 0 && ks[0] % 4 == 0 && ks[1] % 4 == 0 && CudaAllocator.address(k) % 16 == 0;
        ctx.launchShared(attention, base * splits, 32 * warps, warps * d * 4, q, qs[0], qs[1], k, ks[0], ks[1], v, vs[0], vs[1],
                out, os[0], os[1], tq, hq, hkv, d, dv, queryStart, spec.slidingWindow(), spec.scale(), sinks, vec4 ? 1 : 0,
                splits, splitLen, partAcc, partMl, null, null, 0, 1);
        if (splits > 1) {
            ctx.launch(combine, (long) tq * hq, 128, partAcc, partMl, out, os[0], os[1], hq, dv, splits);
        }
        return false;
    }

    /**
     * Exact-mode decode over a paged cache: the per-sequence attention kernel with its keys read
     * through the block tables, one launch for the batch (q [B, Hq, D], caches [rows, Hkv·D|Dv], tables
     * i32 [B, maxBlocks], lens i32 [B]); each row equals that query's attention in an exact prefill bit
     * for bit.
     */
    void pagedExact(Tensor q, Tensor kCache, Tensor vCache, Tensor tables, Tensor lens, int blockSize, int hkv, Tensor out,
                    AttentionSpec spec) {
        CudaFlashAttention.checkPaged(ctx, q, kCache, vCache, tables, lens, blockSize, hkv, out);
        if (kCache.dtype() != DType.F32) {
            throw new IllegalArgumentException("pagedDecodeAttention in exact mode: the KV cache must be f32 (a step must equal the"
                    + " training forward bit for bit), got " + kCache.dtype().name().toLowerCase(java.util.Locale.ROOT) + " " + kCache);
        }
        int b = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int dv = out.size(2);
        if (d > MAX_HEAD_DIM || dv > MAX_HEAD_DIM) {
            throw new IllegalArgumentException("pagedDecodeAttention: head dims " + d + "/" + dv + " exceed " + MAX_HEAD_DIM);
        }
        Tensor sinks = spec.sinks();
        if (sinks != null) {
            ctx.devContiguous("pagedDecodeAttention sinks", sinks, DType.F32);
            if (sinks.numel() != hq) {
                throw new IllegalArgumentException("pagedDecodeAttention: sinks " + sinks + " must hold one logit per query head (" + hq + ")");
            }
        }
        if (b == 0) {
            return;
        }
        if (CudaExactAttention.fits(d, dv)) {   // the same kernel as the exact prefill of these head dims
            exactTiles.paged(q, kCache, vCache, tables, lens, blockSize, hkv, out, spec);
            return;
        }
        int maxKeys = tables.size(1) * blockSize;
        int warps = Math.min(hq / hkv, 8);
        long[] qs = q.strides();
        long[] os = out.strides();
        ctx.launchShared(attention, (long) b * hkv, 32 * warps, warps * d * 4, q, qs[0], qs[1], kCache, (long) hkv * d, (long) d,
                vCache, (long) hkv * dv, (long) dv, out, os[0], os[1], b, hq, hkv, d, dv, 0, spec.slidingWindow(), spec.scale(),
                sinks, 0, 1, maxKeys, null, null, tables, lens, tables.size(1), blockSize);
    }
}
