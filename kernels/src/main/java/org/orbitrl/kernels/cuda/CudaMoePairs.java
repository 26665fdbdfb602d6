package org.orbitrl.kernels.cuda;

import org.bytedeco.cuda.global.cudart;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.NotCapturableException;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.DevicePointer;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.Map;

/**
 * The routed experts of a decode step per (token, expert) pair ({@link org.orbitrl.kernels.Backend#moeExpertMatmulPairs}),
 * for experts held as matrices of their own (a model's loaded experts, LoRA factors): quantized experts
 * through {@code qgemv.cu}'s table mode, f32 and bf16 ones through {@code moe_pairs.cu}. The expert of a
 * pair comes from ids on the device and its matrix from a table of the experts' addresses on the device,
 * so a call never waits for the host and can be captured in a graph.
 *
 * <p>Tables: one per distinct set of expert matrices, uploaded at its first use and kept for the
 * backend's life (at most 32 bytes an expert; a captured step refers to them, so none is ever freed
 * early). A first use inside a capture is refused ({@link NotCapturableException}); a captured step's
 * measuring run, which runs the step eagerly first, makes them.
 */
final class CudaMoePairs {
    /** Words a quantized expert takes in its table: codes, scales, zeros (0: none), global scale (f32 bits). */
    private static final int QUANT_WORDS = 4;
    private static final int DENSE_ROWS_PER_BLOCK = 32; // MP_WARPS * MP_R in moe_pairs.cu
    private static final int DENSE_THREADS = 256;
    private static final int SHARED_DEFAULT = 48 * 1024;
    private static final int MAX_SHARED = 227 * 1024;

    private final CudaContext ctx;
    private final EnumMap<QuantLayout, Kernel> quantized = new EnumMap<>(QuantLayout.class);
    private final Kernel dense;
    private final Map<TableKey, Tensor> tables = new HashMap<>();

    /** The words of a table, compared by value. */
    private record TableKey(long[] words) {
        @Override
        public boolean equals(Object o) {
            return o instanceof TableKey k && Arrays.equals(words, k.words);
        }

        @Override
        public int hashCode() {
            return Arrays.hashCode(words);
        }
    }

    CudaMoePairs(CudaContext ctx) {
        this.ctx = ctx;
        for (QuantLayout l : QuantLayout.values()) {
            quantized.put(l, ctx.kernel("qgemv", "qgemv_" + l.kernelSuffix() + "_pairs_f32"));
        }
        this.dense = ctx.kernel("moe_pairs", "moe_pairs_dense");
    }

    /** Tables held (for tests and the memory report). */
    int tables() {
        return tables.size();
    }

    /**
     * y [P, N] row p (+)= scale · x[p / xDiv] · W_{ids[p]}ᵀ. Quantized experts: y overwritten with scale 1 only
     * ({@code plain}); the caller composes the rest. Returns false when the experts are quantized and the call is not plain.
     */
    boolean matmul(Tensor x, int xDiv, ExpertWeights w, Tensor ids, float scale, Tensor y, boolean accumulate) {
        ctx.devContiguous("moeExpertMatmulPairs x", x, DType.F32);
        ctx.devContiguous("moeExpertMatmulPairs y", y, DType.F32);
        ctx.devContiguous("moeExpertMatmulPairs expert ids", ids, DType.I32);
        int pairs = Math.toIntExact(ids.numel());
        int n = w.rows();
        int k = w.cols();
        if (xDiv <= 0 || pairs % xDiv != 0 || x.size(-1) != k || x.numel() != (long) pairs / xDiv * k || y.size(-1) != n
                || y.numel() != (long) pairs * n) {
            throw new IllegalArgumentException("moeExpertMatmulPairs: x " + x + " (a row per " + xDiv + " pairs), " + pairs
                    + " pairs " + ids + " -> y " + y + " for experts [" + n + ", " + k + "]");
        }
        if (pairs > 65535) {
            throw new IllegalArgumentException("moeExpertMatmulPairs: " + pairs + " pairs exceed one launch (65535)");
        }
        Kind kind = kind(w);
        if (kind.layout != null && (scale != 1f || accumulate)) {
            return false;
        }
        if (pairs == 0 || n == 0) {
            return true;
        }
        Tensor table = table(w, kind);
        if (kind.layout != null) {
            if (CudaAllocator.address(x) % 16 != 0) {
                throw new IllegalArgumentException("moeExpertMatmulPairs: x " + x + " must be 16-byte aligned for quantized experts");
            }
            int warps = CudaQgemv.warpsFor(k / 32, CudaQgemv.quantKLanes(1));
            long gridX = (n + CudaQgemv.quantRowsPerBlock(1) - 1) / CudaQgemv.quantRowsPerBlock(1);
            ctx.launch2d(quantized.get(kind.layout), gridX, pairs, 32 * warps, x, xDiv, ids, table, y, n, k, w.experts(),
                    ctx.errorFlag);
            return true;
        }
        long shared = 4L * k;
        if (shared > MAX_SHARED) {
            throw new IllegalArgumentException("moeExpertMatmulPairs: K " + k + " exceeds the kernel's shared memory (" + MAX_SHARED / 4
                    + " values)");
        }
        boolean vec = k % 8 == 0 && kind.aligned;
        long gridX = (n + DENSE_ROWS_PER_BLOCK - 1) / DENSE_ROWS_PER_BLOCK;
        ctx.launch2dShared(dense, gridX, pairs, DENSE_THREADS, (int) Math.max(shared, 16), x, xDiv, ids, table,
                kind.bf16 ? 1 : 0, vec ? 1 : 0, scale, y, accumulate ? 1 : 0, n, k, w.experts(), ctx.errorFlag);
        return true;
    }

    /** What the held experts are: one quantized layout, or full precision of one dtype (and whether every row start is 16-byte aligned). */
    private record Kind(QuantLayout layout, boolean bf16, boolean aligned) {
    }

    private Kind kind(ExpertWeights w) {
        QuantLayout layout = null;
        DType dtype = null;
        boolean aligned = true;
        boolean any = false;
        for (int e = 0; e < w.experts(); e++) {
            QuantizedTensor q = w.quantized(e);
            Tensor d = w.dense(e);
            if (q != null) {
                QuantLayout l = QuantLayout.of(q, ctx);
                if (dtype != null || (layout != null && layout != l)) {
                    throw mixed(w);
                }
                layout = l;
            } else if (d != null) {
                ctx.devContiguous("moeExpertMatmulPairs expert " + e, d, null);
                if (layout != null || (dtype != null && dtype != d.dtype())) {
                    throw mixed(w);
                }
                dtype = d.dtype();
                aligned &= CudaAllocator.address(d) % 16 == 0;
            } else {
                continue;
            }
            any = true;
        }
        if (!any) {
            throw new IllegalArgumentException("moeExpertMatmulPairs: this rank holds none of the " + w.experts() + " experts");
        }
        return new Kind(layout, dtype == DType.BF16, aligned);
    }

    private static IllegalArgumentException mixed(ExpertWeights w) {
        return new IllegalArgumentException("moeExpertMatmulPairs: the " + w.experts() + " experts [" + w.rows() + ", " + w.cols()
                + "] mix formats; the pair products take one quantized format, or full precision of one dtype");
    }

    /** The device table of the experts' addresses (made at the first use of this set of matrices). */
    private Tensor table(ExpertWeights w, Kind kind) {
        int per = kind.layout != null ? QUANT_WORDS : 1;
        long[] words = new long[w.experts() * per];
        for (int e = 0; e < w.experts(); e++) {
            QuantizedTensor q = w.quantized(e);
            if (q != null) {
                words[per * e] = CudaAllocator.address(q.codes());
                words[per * e + 1] = CudaAllocator.address(q.scales());
                words[per * e + 2] = q.zeros() == null ? 0 : CudaAllocator.address(q.zeros());
                words[per * e + 3] = Float.floatToRawIntBits(q.globalScale()) & 0xffffffffL;
            } else if (w.dense(e) != null) {
                words[per * e] = CudaAllocator.address(w.dense(e));
            }
        }
        TableKey key = new TableKey(words);
        Tensor t = tables.get(key);
        if (t != null) {
            return t;
        }
        if (ctx.allocator.inCapture()) {
            throw new NotCapturableException("the first use of a set of " + w.experts() + " expert matrices (its address table is"
                    + " uploaded); a captured step's measuring run makes it");
        }
        t = ctx.allocator.allocate(MemoryCategory.RUNTIME_RESERVE, DType.I64, words.length);
        MemorySegment host = Arena.ofAuto().allocate(8L * words.length, 16);
        MemorySegment.copy(words, 0, host, ValueLayout.JAVA_LONG, 0, words.length);
        CudaCheck.check(cudart.cudaMemcpyAsync(new DevicePointer(CudaAllocator.address(t)), new DevicePointer(host.address()),
                8L * words.length, cudart.cudaMemcpyHostToDevice, ctx.stream.handle()), "cudaMemcpyAsync host->device (expert table)",
                words.length + " words");
        tables.put(key, t);
        return t;
    }
}
