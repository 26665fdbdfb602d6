package org.orbitrl.kernels.cuda;

import org.bytedeco.cuda.global.cudart;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.NotCapturableException;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.DevicePointer;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

/**
 * Device tables of a set of experts' matrices, for kernels that find an expert's matrix from its id on the device: an
 * expert's words in order, {@link #QUANT_WORDS} for a quantized one (codes, scales, zeros (0: none), global scale as f32
 * bits), one or {@link #QUANT_WORDS} for a dense one (its address, then zeros). One table per distinct content, uploaded
 * at its first use and kept for the backend's life (a captured step refers to it, so none is freed early); a first use
 * inside a capture is refused ({@link NotCapturableException}): a captured step's measuring run, which runs the step
 * eagerly first, makes them. Accounted as {@link MemoryCategory#RUNTIME_RESERVE}.
 */
final class ExpertTables {
    /** Words a quantized expert takes: codes, scales, zeros, global scale bits. */
    static final int QUANT_WORDS = 4;

    private final CudaContext ctx;
    private final Map<Key, Tensor> tables = new HashMap<>();

    /** The words of a table, compared by value. */
    private record Key(long[] words) {
        @Override
        public boolean equals(Object o) {
            return o instanceof Key k && Arrays.equals(words, k.words);
        }

        @Override
        public int hashCode() {
            return Arrays.hashCode(words);
        }
    }

    ExpertTables(CudaContext ctx) {
        this.ctx = ctx;
    }

    /**
     * The table of w's experts, {@code per} words an expert (1: dense experts' addresses alone; {@link #QUANT_WORDS}: every
     * expert in four words); an expert not held has the words 0.
     */
    Tensor table(ExpertWeights w, int per) {
        long[] words = new long[w.experts() * per];
        for (int e = 0; e < w.experts(); e++) {
            QuantizedTensor q = w.quantized(e);
            if (q != null) {
                if (per < QUANT_WORDS) {
                    throw new IllegalArgumentException("a table of " + per + " words an expert for quantized expert " + e);
                }
                words[per * e] = CudaAllocator.address(q.codes());
                words[per * e + 1] = CudaAllocator.address(q.scales());
                words[per * e + 2] = q.zeros() == null ? 0 : CudaAllocator.address(q.zeros());
                words[per * e + 3] = Float.floatToRawIntBits(q.globalScale()) & 0xffffffffL;
            } else if (w.dense(e) != null) {
                words[per * e] = CudaAllocator.address(w.dense(e));
            }
        }
        Key key = new Key(words);
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
        java.lang.ref.Reference.reachabilityFence(host); // the driver has staged the pageable copy when the call returns
        tables.put(key, t);
        return t;
    }

    /** Tables held (for tests and the memory report). */
    int size() {
        return tables.size();
    }
}
