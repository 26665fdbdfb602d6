package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

/** Random INT4 g32 (compressed-tensors symmetric layout) matrices for the GPU benchmarks. */
final class BenchQuant {
    private BenchQuant() {
    }

    static final QuantFormat INT4 = new QuantFormat() {
        @Override
        public String name() {
            return "int4-g32";
        }

        @Override
        public int groupSize() {
            return 32;
        }

        @Override
        public int bitsPerValue() {
            return 4;
        }

        @Override
        public DType scaleType() {
            return DType.BF16;
        }

        @Override
        public long packedBytesPerRow(long cols) {
            return cols / 2;
        }

        @Override
        public long storageBytes(long rows, long cols) {
            return rows * cols / 2 + rows * cols / 32 * 2;
        }

        @Override
        public void dequantizeRow(QuantizedTensor w, long row, float[] out) {
            throw new UnsupportedOperationException("benchmark data only");
        }

        @Override
        public QuantizedTensor quantize(Tensor weight) {
            throw new UnsupportedOperationException("benchmark data only");
        }
    };

    static final QuantFormat MXFP4 = new QuantFormat() {
        @Override
        public String name() {
            return "mxfp4";
        }

        @Override
        public int groupSize() {
            return 32;
        }

        @Override
        public int bitsPerValue() {
            return 4;
        }

        @Override
        public DType scaleType() {
            return DType.U8;
        }

        @Override
        public long packedBytesPerRow(long cols) {
            return cols / 2;
        }

        @Override
        public long storageBytes(long rows, long cols) {
            return rows * cols / 2 + rows * cols / 32;
        }

        @Override
        public void dequantizeRow(QuantizedTensor w, long row, float[] out) {
            throw new UnsupportedOperationException("benchmark data only");
        }

        @Override
        public QuantizedTensor quantize(Tensor weight) {
            throw new UnsupportedOperationException("benchmark data only");
        }
    };

    /** Random E2M1 codes and E8M0 scales around 2^-4: a [n, k] MXFP4 matrix on the host. */
    static QuantizedTensor randomMxfp4(SplittableRandom r, int n, int k) {
        QuantizedTensor t = randomInt4(r, n, k);
        Tensor scales = Tensor.allocate(Arena.ofAuto(), DType.U8, n, k / 32);
        MemorySegment s = scales.segment();
        for (long i = 0; i < (long) n * k / 32; i++) {
            s.set(ValueLayout.JAVA_BYTE, i, (byte) (120 + r.nextInt(6)));
        }
        return new QuantizedTensor(MXFP4, n, k, t.codes(), scales, null, 1f);
    }

    /** Random codes and bf16 scales in [0.002, 0.05): a [n, k] INT4 g32 matrix on the host. */
    static QuantizedTensor randomInt4(SplittableRandom r, int n, int k) {
        Tensor codes = Tensor.allocate(Arena.ofAuto(), DType.U8, n, k / 2);
        MemorySegment c = codes.segment();
        for (long i = 0; i < (long) n * k / 2; i++) {
            c.set(ValueLayout.JAVA_BYTE, i, (byte) r.nextInt(256));
        }
        Tensor scales = Tensor.allocate(Arena.ofAuto(), DType.BF16, n, k / 32);
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < k / 32; g++) {
                scales.setFloat((float) (0.002 + 0.048 * r.nextDouble()), i, g);
            }
        }
        return new QuantizedTensor(INT4, n, k, codes, scales, null, 1f);
    }
}
