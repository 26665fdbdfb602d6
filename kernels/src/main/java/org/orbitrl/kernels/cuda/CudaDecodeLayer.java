package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.DecodeLayer;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.function.Function;

/**
 * A decode step's whole Qwen3-MoE layer at one token as one cooperative launch ({@code decode_layer.cu}), for the
 * batch-1 decode that the layer's fourteen separate launches leave latency-bound: one block an SM, whose producer warp
 * copies every weight the block multiplies into shared memory as soon as the bytes are known (q/k/v at the start, o and
 * the router rows during the attention, the routed experts' gate, up and down rows as soon as the top-k is known) while
 * twelve consumer warps compute, the phases passing their outputs across six grid barriers.
 *
 * <p>Off by default ({@code -Dorbit.cuda.decodeLayer=on}, read at each call, asks for it): on the H200 the launch takes
 * 83 µs a layer against the separate launches' 85-90, and the step measured 4.53 against 4.32 ms (BENCHMARKS.md, with
 * the phase trace and what holds it back: every phase waits on a few dependent global loads queued behind the block's
 * weight copies, and one warp's copies stream at about 1.4 TB/s).
 *
 * <p>It takes a layer it can ({@link #layer} declines the rest, and the caller runs the separate operations): one
 * token; hidden at most 2048 and a multiple of 32; bf16 q/k/v/o and router weights with 16-byte aligned rows; experts
 * stacked INT4 group-32 (symmetric) of width at most 2048, top-k at most 8, at most twice as many experts (a multiple of
 * 4) as SMs; at most 16 q heads a kv head, head dim at most 256; causal attention without window or sinks; every
 * block's share of a phase within shared memory.
 */
final class CudaDecodeLayer {
    /** {@code -Dorbit.cuda.decodeLayer=on} (read at each call): layers this launch takes run as one; otherwise none does. */
    static final String PROPERTY = "orbit.cuda.decodeLayer";
    private static final int THREADS = 416;  // twelve consumer warps and the producer warp
    private static final int MAX_SHARED = 227 * 1024;
    private static final int MAX_HIDDEN = 2048;  // DL_NT · 256
    private static final int MAX_TOPK = 8;
    private static final int MAX_RATIO = 16;
    private static final int MAX_HEAD_DIM = 256;
    private static final int MAX_ACC = 16 * 256;     // q values of a kv head's heads: 16 a consumer thread
    private static final int MAX_DOWN_ROWS = 64;
    private static final int TILE_KEYS = 32;
    private static final int MAX_SPLITS = 256;

    private final CudaContext ctx;
    private final Function<RopeTable, Tensor[]> ropeTables;
    private final Kernel f32Cache;
    private final Kernel bf16Cache;
    private final Tensor gridBarrier; // u32 [2]: arrivals, departures; 0 between launches
    private long launches;
    private Tensor trace;             // null, or i64 [grid, 16]: the phases' global-timer stamps of the next launches

    CudaDecodeLayer(CudaContext ctx, Function<RopeTable, Tensor[]> ropeTables) {
        this.ctx = ctx;
        this.ropeTables = ropeTables;
        this.f32Cache = ctx.kernel("decode_layer", "decode_layer_f32");
        this.bf16Cache = ctx.kernel("decode_layer", "decode_layer_kvbf16");
        this.gridBarrier = ctx.allocator.allocate(MemoryCategory.RUNTIME_RESERVE, DType.I32, 2);
        ctx.allocator.zero(gridBarrier);
    }

    /** Whether {@code -Dorbit.cuda.decodeLayer=on} asks for the launch (read at each call). */
    static boolean asked() {
        return "on".equals(System.getProperty(PROPERTY));
    }

    /** Layers this backend ran as one launch so far. */
    long launches() {
        return launches;
    }

    /**
     * Records the phases' timestamps of the following launches into {@code trace} i64 [grid, 16] (ns of the global timer,
     * block by block; each launch overwrites the last), or stops (null).
     */
    void trace(Tensor trace) {
        if (trace != null && trace.numel() < 16L * ctx.device.multiprocessors()) {
            throw new IllegalArgumentException("decodeLayer trace " + trace + " holds fewer than 16 stamps for each of "
                    + ctx.device.multiprocessors() + " blocks");
        }
        this.trace = trace;
    }

    /** See {@link org.orbitrl.kernels.Backend#decodeLayer}; false where this launch does not take the layer. */
    boolean layer(DecodeLayer l, Tensor x, Tensor out, Tensor positions, RopeTable rope, Tensor kCache, Tensor vCache, Tensor slots,
                  Tensor tables, Tensor lens, int blockSize) {
        if (!asked() || !ctx.device.cooperativeLaunch()) {
            return false;
        }
        int h = l.hidden();
        int hq = l.heads();
        int hkv = l.kvHeads();
        int d = l.headDim();
        int ratio = hq / hkv;
        int nq = hq * d;
        int nk = hkv * d;
        ctx.devContiguous("decodeLayer x", x, DType.F32);
        ctx.devContiguous("decodeLayer out", out, DType.F32);
        if (x.numel() != h || out.numel() != h || x == out) {
            return false; // a batch of several sequences (or x in place): the separate operations
        }
        for (Tensor w : new Tensor[]{l.q(), l.k(), l.v(), l.o(), l.router()}) {
            if (w.dtype() != DType.BF16 || w.rank() != 2) {
                return false; // f32 weights: the separate operations
            }
        }
        checkShape("q", l.q(), nq, h);
        checkShape("k", l.k(), nk, h);
        checkShape("v", l.v(), nk, h);
        checkShape("o", l.o(), h, nq);
        int experts = l.router().size(0);
        checkShape("router", l.router(), experts, h);
        QuantizedTensor gate = l.gate().stacked();
        QuantizedTensor up = l.up().stacked();
        QuantizedTensor down = l.down().stacked();
        if (gate == null || up == null || down == null || !symmetricInt4(gate) || !symmetricInt4(up) || !symmetricInt4(down)
                || l.gate().experts() != experts || l.up().experts() != experts || l.down().experts() != experts) {
            return false;
        }
        int inter = l.gate().rows();
        if (l.up().rows() != inter || l.gate().cols() != h || l.up().cols() != h || l.down().rows() != h || l.down().cols() != inter) {
            throw new IllegalArgumentException("decodeLayer: experts gate " + l.gate() + ", up " + l.up() + " [I, " + h + "] and down "
                    + l.down() + " [" + h + ", I] do not agree");
        }
        DType normType = l.inputNorm().dtype();
        int grid = ctx.device.multiprocessors();
        int topk = l.topK();
        boolean headNorms = l.qNorm() != null || l.kNorm() != null;
        DType headNormType = l.qNorm() != null ? l.qNorm().dtype() : l.kNorm() != null ? l.kNorm().dtype() : DType.F32;
        if (h > MAX_HIDDEN || h % 32 != 0 || inter > MAX_HIDDEN || inter % 32 != 0 || topk > MAX_TOPK || topk > experts
                || ratio > MAX_RATIO || d > MAX_HEAD_DIM || d % 4 != 0 || ratio * d > MAX_ACC || nq % 8 != 0
                || experts > 2 * grid || experts % 4 != 0 || (h + grid - 1) / grid > MAX_DOWN_ROWS
                || l.spec().slidingWindow() != 0 || l.spec().sinks() != null || rope.rotaryDim() > d
                || (normType != DType.F32 && normType != DType.BF16) || l.postNorm().dtype() != normType
                || l.postNorm().numel() != h
                || (headNorms && headNormType != DType.F32 && headNormType != DType.BF16)
                || (l.qNorm() != null && (l.qNorm().dtype() != headNormType || l.qNorm().numel() != d))
                || (l.kNorm() != null && (l.kNorm().dtype() != headNormType || l.kNorm().numel() != d))
                || positions.numel() != 1 || slots.numel() != 1 || lens.numel() != 1) {
            return false;
        }
        for (Tensor t : new Tensor[]{l.q(), l.k(), l.v(), l.o(), l.router(), gate.codes(), up.codes(), down.codes()}) {
            if (CudaAllocator.address(t) % 16 != 0) {
                return false;
            }
        }
        CudaFlashAttention.checkCaches(ctx, "decodeLayer", kCache, vCache);
        if (kCache.dim(-1) != nk || vCache.dim(-1) != nk) {
            return false; // values of another width than the keys (the separate operations take those)
        }
        ctx.devContiguous("decodeLayer positions", positions, DType.I32);
        ctx.devContiguous("decodeLayer slots", slots, DType.I32);
        ctx.devContiguous("decodeLayer tables", tables, DType.I32);
        ctx.devContiguous("decodeLayer lens", lens, DType.I32);
        int pairs = topk * inter;
        long ring = ringBytes(h, nq, nk, inter, topk, pairs, grid);
        long aux = Math.max(Math.max(nq, pairs), Math.max(experts, 2L * ratio * d + 6L * d + (long) ratio * TILE_KEYS + 2L * TILE_KEYS * d));
        long shared = ring + 4L * (h + aux);
        Kernel kernel = kCache.dtype() == DType.BF16 ? bf16Cache : f32Cache;
        if (shared + kernel.staticSharedBytes() > MAX_SHARED || kernel.residentBlocksPerSm(THREADS, (int) shared) < 1) {
            return false;
        }
        int splits = Math.min(MAX_SPLITS, Math.max(1, grid / hkv));
        long partFloats = (long) hkv * splits * ratio * (d + 2);
        long[] sizes = {nq + 2L * nk, partFloats, nq, experts, pairs};
        long total = 0;
        for (long s : sizes) {
            total += (s + 3) & ~3L; // 16-byte aligned pieces
        }
        Tensor scratch = ctx.scratch(CudaContext.Scratch.DECODE_LAYER, DType.F32, total);
        Tensor[] parts = new Tensor[sizes.length];
        long at = 0;
        for (int i = 0; i < sizes.length; i++) {
            parts[i] = scratch.slice(0, at, at + sizes[i]);
            at += (sizes[i] + 3) & ~3L;
        }
        Tensor[] cs = ropeTables.apply(rope);
        ctx.launchCooperative(kernel, grid, THREADS, (int) shared, x, out, l.inputNorm(), l.postNorm(), normType == DType.BF16 ? 1 : 0,
                l.eps(), l.q(), l.k(), l.v(), l.o(), l.qNorm(), l.kNorm(), headNormType == DType.BF16 ? 1 : 0, cs[0], cs[1],
                rope.rotaryDim() / 2, rope.style() == RopeTable.Style.INTERLEAVED ? 1 : 0, rope.maxPositions(), positions, kCache,
                vCache, slots, tables, tables.dim(-1), lens, blockSize, l.spec().scale(), l.router(), experts, topk,
                l.normTopK() ? 1 : 0, gate.codes(), gate.scales(), up.codes(), up.scales(), down.codes(), down.scales(), h, hq, hkv,
                d, inter, splits, parts[0], parts[1], parts[2], parts[3], parts[4], gridBarrier, ctx.errorFlag, (int) ring, trace);
        launches++;
        return true;
    }

    /**
     * Shared memory the blocks' weight copies need: the most any block's share of a phase takes (q/k/v rows; o rows and
     * two router rows; gate and up rows of its pairs and down rows of every routed expert, each piece widened to 16-byte
     * boundaries).
     */
    static long ringBytes(int h, int nq, int nk, int inter, int topk, int pairs, int grid) {
        long qkv = ceilDiv(nq + 2L * nk, grid) * h * 2L;
        long o = ceilDiv(h, grid) * nq * 2L + 2L * h * 2L;
        long experts = ceilDiv(pairs, grid) * 2L * (h / 2 + h / 16) + 16L * 4 * 32
                + topk * (ceilDiv(h, grid) * (inter / 2 + inter / 16) + 2L * 32);
        long most = Math.max(qkv, Math.max(o, experts));
        return (most + 15) & ~15L;
    }

    private static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }

    /** Throws unless w is a 2-D contiguous bf16 device weight of [rows, cols]. */
    private void checkShape(String what, Tensor w, long rows, long cols) {
        ctx.devContiguous("decodeLayer " + what, w, DType.BF16);
        if (w.rank() != 2 || w.dim(0) != rows || w.dim(1) != cols) {
            throw new IllegalArgumentException("decodeLayer: " + what + " " + w + " must be [" + rows + ", " + cols + "]");
        }
    }

    private static boolean symmetricInt4(QuantizedTensor w) {
        return w.format().name().equals("int4-g32") && w.zeros() == null;
    }
}
