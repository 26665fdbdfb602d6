package org.orbitrl.kernels;

import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.Arrays;

/**
 * One projection (gate, up or down) of a mixture-of-experts layer's routed experts: E matrices of
 * the same shape [rows, cols], each held in full precision (f32 or bf16) or quantized. An entry
 * with neither form is an expert this rank does not hold (expert parallelism); routing a pair to
 * it is an error. Built once when the model is loaded; the matrices are shared, never copied, and the arrays are not
 * changed after construction (the stacked view, {@link #stacked}, is worked out once: a decode step asks for it in
 * every MoE layer, and for hundreds of experts the check takes tens of microseconds of host time).
 */
public final class ExpertWeights {
    private static final Object UNCHECKED = new Object();

    private final int rows;
    private final int cols;
    private final Tensor[] dense;
    private final QuantizedTensor[] quantized;
    private volatile Object stack = UNCHECKED;   // the stacked view, null when the experts do not lie back to back

    public ExpertWeights(int rows, int cols, Tensor[] dense, QuantizedTensor[] quantized) {
        this.rows = rows;
        this.cols = cols;
        this.dense = dense;
        this.quantized = quantized;
        if (dense.length != quantized.length) {
            throw new IllegalArgumentException("ExpertWeights: " + dense.length + " dense and " + quantized.length
                    + " quantized entries (one per expert each)");
        }
        for (int e = 0; e < dense.length; e++) {
            if (dense[e] != null && quantized[e] != null) {
                throw new IllegalArgumentException("ExpertWeights: expert " + e + " is both dense and quantized");
            }
            long r = dense[e] != null ? dense[e].dim(0) : quantized[e] != null ? quantized[e].rows() : rows;
            long c = dense[e] != null ? dense[e].dim(1) : quantized[e] != null ? quantized[e].cols() : cols;
            if (r != rows || c != cols || (dense[e] != null && (dense[e].rank() != 2
                    || (dense[e].dtype() != DType.F32 && dense[e].dtype() != DType.BF16)))) {
                throw new IllegalArgumentException("ExpertWeights: expert " + e + " is "
                        + (dense[e] != null ? dense[e] : quantized[e]) + ", expected f32/bf16 or quantized [" + rows + ", " + cols + "]");
            }
        }
    }

    /** Rows of each expert's matrix. */
    public int rows() {
        return rows;
    }

    /** Columns of each expert's matrix. */
    public int cols() {
        return cols;
    }

    /** The experts' full-precision matrices, null where quantized or not held (the array itself: not to be changed). */
    public Tensor[] dense() {
        return dense;
    }

    /** The experts' quantized matrices, null where in full precision or not held (the array itself: not to be changed). */
    public QuantizedTensor[] quantized() {
        return quantized;
    }

    /** Experts E. */
    public int experts() {
        return dense.length;
    }

    /** True when expert e is held here. */
    public boolean held(int e) {
        return dense[e] != null || quantized[e] != null;
    }

    /** Expert e's full-precision matrix [rows, cols], or null when it is quantized or not held. */
    public Tensor dense(int e) {
        return dense[e];
    }

    /** Expert e's quantized matrix [rows, cols], or null when it is in full precision or not held. */
    public QuantizedTensor quantized(int e) {
        return quantized[e];
    }

    /**
     * The experts as one quantized matrix [E·rows, cols] (expert e its rows {@code [e·rows, (e + 1)·rows)}), a view of
     * the memory they are held in, when they lie back to back there: every expert held and quantized in one format with
     * one global scale, and its codes, scales and zero points each the e-th of E equal consecutive pieces of one memory
     * segment (how {@code Placement.experts} places them on a device). Null otherwise: the kernels that read a stacked
     * matrix then do not apply. The stack's parts are the experts' parts end to end, so this holds for formats whose
     * parts are laid out by rows (the INT4 and FP4 formats here), which the stacked matrix's own check confirms.
     */
    public QuantizedTensor stacked() {
        Object s = stack;
        if (s == UNCHECKED) {
            s = stackOf();
            stack = s;
        }
        return (QuantizedTensor) s;
    }

    private QuantizedTensor stackOf() {
        QuantizedTensor first = experts() == 0 ? null : quantized[0];
        if (first == null) {
            return null;
        }
        for (int e = 0; e < experts(); e++) {
            QuantizedTensor q = quantized[e];
            if (q == null || q.format() != first.format() || Float.floatToRawIntBits(q.globalScale()) != Float.floatToRawIntBits(first.globalScale())
                    || !follows(first.codes(), q.codes(), e) || !follows(first.scales(), q.scales(), e)
                    || (first.zeros() == null) != (q.zeros() == null) || (first.zeros() != null && !follows(first.zeros(), q.zeros(), e))) {
                return null;
            }
        }
        int n = experts();
        Tensor codes = span(first.codes(), n);
        Tensor scales = span(first.scales(), n);
        Tensor zeros = first.zeros() == null ? null : span(first.zeros(), n);
        if (codes == null || scales == null || (first.zeros() != null && zeros == null)) {
            return null;
        }
        try {
            return new QuantizedTensor(first.format(), (long) n * rows, cols, codes, scales, zeros, first.globalScale());
        } catch (IllegalArgumentException notStackable) { // a format whose parts do not stack by rows
            return null;
        }
    }

    /**
     * The inverse of {@link #stacked}: the experts of a quantized matrix [E·rows, cols] (expert e its rows
     * {@code [e·rows, (e + 1)·rows)}) as matrices of their own, views of its codes, scales and zero points (no copy), for
     * formats whose parts are laid out by rows. Zero points pack 8 rows to a word, so with them rows must be a multiple
     * of 8.
     */
    public static ExpertWeights ofStack(QuantizedTensor stack, int rows) {
        if (rows <= 0 || stack.rows() % rows != 0) {
            throw new IllegalArgumentException("ExpertWeights.ofStack: " + stack + " does not split into experts of " + rows + " rows");
        }
        int n = Math.toIntExact(stack.rows() / rows);
        QuantizedTensor[] q = new QuantizedTensor[n];
        for (int e = 0; e < n; e++) {
            q[e] = expertOfStack(stack, e, rows);
        }
        return new ExpertWeights(rows, Math.toIntExact(stack.cols()), new Tensor[n], q);
    }

    /** Expert e of a stacked quantized matrix [E·rows, cols] as its own [rows, cols] matrix (views, see {@link #ofStack}). */
    public static QuantizedTensor expertOfStack(QuantizedTensor stack, int e, int rows) {
        Tensor zeros = null;
        if (stack.zeros() != null) {
            if (rows % 8 != 0) {
                throw new IllegalArgumentException(stack + ": asymmetric experts need a row count divisible by 8, got " + rows);
            }
            zeros = stack.zeros().slice(0, (long) e * rows / 8, (long) (e + 1) * rows / 8);
        }
        long codeRows = stack.codes().dim(0) / (stack.rows() / rows);
        long scaleRows = stack.scales().dim(0) / (stack.rows() / rows);
        return new QuantizedTensor(stack.format(), rows, stack.cols(), stack.codes().slice(0, e * codeRows, (e + 1) * codeRows),
                stack.scales().slice(0, e * scaleRows, (e + 1) * scaleRows), zeros, stack.globalScale());
    }

    /** Whether {@code t} is the e-th piece after {@code first}: same segment, dtype and shape, contiguous, right after. */
    private static boolean follows(Tensor first, Tensor t, int e) {
        return t.segment().address() == first.segment().address() && t.dtype() == first.dtype()
                && Arrays.equals(t.shape(), first.shape()) && t.isContiguous() && first.isContiguous()
                && t.byteOffset() == first.byteOffset() + e * first.byteSize();
    }

    /** {@code count} pieces shaped as {@code first}, stacked along dimension 0 from {@code first} on; null when the segment ends before. */
    private static Tensor span(Tensor first, int count) {
        long bytes = count * first.byteSize();
        if (first.rank() == 0 || first.byteOffset() + bytes > first.segment().byteSize()) {
            return null;
        }
        long[] shape = first.shape();
        shape[0] *= count;
        long elements = first.segment().byteSize() / first.dtype().bytes();
        return Tensor.wrap(first.segment(), first.dtype(), elements).slice(0, first.offset(), first.offset() + count * first.numel())
                .reshape(shape);
    }

    /** Checks that every expert with a pair in {@code offsets} [E + 1] is held. */
    public void requireHeld(String op, int[] offsets) {
        if (offsets.length != experts() + 1) {
            throw new IllegalArgumentException(op + ": " + offsets.length + " offsets for " + experts() + " experts (expected E + 1)");
        }
        for (int e = 0; e < experts(); e++) {
            if (offsets[e + 1] > offsets[e] && !held(e)) {
                throw new IllegalArgumentException(op + ": expert " + e + " has " + (offsets[e + 1] - offsets[e])
                        + " pairs but is not held on this rank");
            }
        }
    }

    @Override
    public String toString() {
        return "ExpertWeights[" + experts() + " x [" + rows + ", " + cols + "]]";
    }
}
