package org.orbitrl.kernels;

import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * One projection (gate, up or down) of a mixture-of-experts layer's routed experts: E matrices of
 * the same shape [rows, cols], each held in full precision (f32 or bf16) or quantized. An entry
 * with neither form is an expert this rank does not hold (expert parallelism); routing a pair to
 * it is an error. Built once when the model is loaded; the matrices are shared, never copied.
 */
public record ExpertWeights(int rows, int cols, Tensor[] dense, QuantizedTensor[] quantized) {

    public ExpertWeights {
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
}
