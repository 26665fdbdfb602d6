package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

/** Seeded inputs and whole-matrix views for the quant tests. */
final class QuantTesting {
    private QuantTesting() {
    }

    /**
     * A [rows, cols] f32 matrix of Gaussian values whose magnitude changes every 16 columns by a
     * random power of two in [2^-6, 2^4], so groups need very different scales.
     */
    static Tensor gaussian(long seed, int rows, int cols) {
        SplittableRandom rnd = new SplittableRandom(seed);
        float[] v = new float[rows * cols];
        for (int r = 0; r < rows; r++) {
            float mag = 1;
            for (int c = 0; c < cols; c++) {
                if (c % 16 == 0) {
                    mag = Math.scalb(1f, rnd.nextInt(-6, 5));
                }
                v[r * cols + c] = (float) nextGaussian(rnd) * mag;
            }
        }
        return Tensor.of(v, rows, cols);
    }

    static double nextGaussian(SplittableRandom rnd) {
        double u = rnd.nextDouble(1e-300, 1.0);
        double t = rnd.nextDouble();
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * t);
    }

    /** All rows of w, dequantized through {@link QuantFormat#dequantizeRow}, row-major. */
    static float[] dequantize(QuantizedTensor w) {
        int rows = Math.toIntExact(w.rows());
        int cols = Math.toIntExact(w.cols());
        float[] out = new float[rows * cols];
        float[] row = new float[cols];
        for (int r = 0; r < rows; r++) {
            w.format().dequantizeRow(w, r, row);
            System.arraycopy(row, 0, out, r * cols, cols);
        }
        return out;
    }
}
