package org.orbitrl.model.nn;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.Fp8Block128;
import org.orbitrl.kernels.quant.Fp8Block128Ue8m0;
import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * A frozen base weight matrix [out, in]: full precision (f32/bf16, often a zero-copy view of the
 * memory-mapped checkpoint) or quantized. Base weights never receive gradients.
 */
public sealed interface Weight permits Weight.Dense, Weight.Quantized {

    long rows();

    long cols();

    /** Bytes the weight occupies. */
    long byteSize();

    /** {@code y = x · wᵀ}: x [M, cols] f32 -> y [M, rows] f32. */
    void forward(Backend backend, Tensor x, Tensor y);

    /**
     * {@code dx = dy · w}: dy [M, rows] -> dx [M, cols], the activation gradient through the frozen
     * weight (never a weight gradient).
     */
    void backward(Backend backend, Tensor dy, Tensor dx);

    static Weight of(Tensor w) {
        return new Dense(w);
    }

    static Weight of(QuantizedTensor w) {
        return new Quantized(w);
    }

    /** The values as an f32 [rows, cols] host tensor: a dense weight widened, a quantized one decoded a row at a time. */
    static Tensor decoded(Weight w) {
        return switch (w) {
            case Dense d -> d.w().dtype() == DType.F32 ? d.w() : d.w().to(DType.F32);
            case Quantized q -> {
                int rows = Math.toIntExact(q.w().rows());
                int cols = Math.toIntExact(q.w().cols());
                float[] all = new float[rows * cols];
                float[] row = new float[cols];
                for (int r = 0; r < rows; r++) {
                    q.w().format().dequantizeRow(q.w(), r, row);
                    System.arraycopy(row, 0, all, r * cols, cols);
                }
                yield Tensor.of(all, rows, cols);
            }
        };
    }

    /**
     * What quantizing an expert on load starts from: a dense weight as stored, an FP8 block weight (DeepSeek's and
     * Kimi-K2's fp8 checkpoints store their experts so) decoded to f32; null for one already in a 4-bit format, which
     * stays as stored.
     */
    static Tensor quantizable(Weight w) {
        return switch (w) {
            case Dense d -> d.w();
            case Quantized q -> q.w().format() == Fp8Block128.INSTANCE || q.w().format() == Fp8Block128Ue8m0.INSTANCE
                    ? decoded(w) : null;
        };
    }

    /** A full-precision weight. */
    record Dense(Tensor w) implements Weight {
        public Dense {
            if (w.rank() != 2 || (w.dtype() != DType.F32 && w.dtype() != DType.BF16)) {
                throw new IllegalArgumentException("a dense weight must be a 2-D f32 or bf16 tensor, got " + w);
            }
        }

        @Override
        public long rows() {
            return w.dim(0);
        }

        @Override
        public long cols() {
            return w.dim(1);
        }

        @Override
        public long byteSize() {
            return w.byteSize();
        }

        @Override
        public void forward(Backend backend, Tensor x, Tensor y) {
            backend.matmul(x, w, y);
        }

        @Override
        public void backward(Backend backend, Tensor dy, Tensor dx) {
            backend.matmulTransposed(dy, w, dx);
        }
    }

    /** A quantized weight, decoded on the fly. */
    record Quantized(QuantizedTensor w) implements Weight {
        @Override
        public long rows() {
            return w.rows();
        }

        @Override
        public long cols() {
            return w.cols();
        }

        @Override
        public long byteSize() {
            return w.byteSize();
        }

        @Override
        public void forward(Backend backend, Tensor x, Tensor y) {
            backend.matmulQuantized(x, w, y);
        }

        @Override
        public void backward(Backend backend, Tensor dy, Tensor dx) {
            backend.matmulQuantizedTransposed(dy, w, dx);
        }
    }
}
