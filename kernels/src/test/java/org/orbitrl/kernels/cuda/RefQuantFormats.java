package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

/**
 * Plain reference decoders for the layouts the CUDA kernels read, written from the format
 * definitions (compressed-tensors pack-quantized INT4, OCP MXFP4, NVFP4), and random matrices in
 * them. Codes are u8 [N, K/2], the even element in the low nibble.
 */
final class RefQuantFormats {
    private RefQuantFormats() {
    }

    private static final float[] E2M1 = {0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f, -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f};

    enum Kind { INT4, MXFP4, NVFP4 }

    static QuantFormat format(Kind kind) {
        return new Ref(kind);
    }

    /** A random [n, k] matrix in {@code kind}: uniform codes, scales of moderate spread. */
    static QuantizedTensor random(Kind kind, SplittableRandom r, int n, int k) {
        Ref f = new Ref(kind);
        Tensor codes = Tensor.allocate(Arena.ofAuto(), DType.U8, n, k / 2);
        for (long i = 0; i < (long) n * k / 2; i++) {
            codes.setLong(r.nextInt(256), i / (k / 2), i % (k / 2));
        }
        int groups = k / f.groupSize();
        Tensor scales = Tensor.allocate(Arena.ofAuto(), kind == Kind.INT4 ? DType.BF16 : DType.U8, n, groups);
        for (int i = 0; i < n; i++) {
            for (int g = 0; g < groups; g++) {
                switch (kind) {
                    case INT4 -> scales.setFloat((float) (0.002 + 0.05 * r.nextDouble()), i, g);
                    case MXFP4 -> scales.setLong(120 + r.nextInt(10), i, g);            // 2^-7 .. 2^2
                    case NVFP4 -> scales.setLong(0x20 + r.nextInt(0x30), i, g);         // E4M3 0.0625 .. 3.75
                }
            }
        }
        return new QuantizedTensor(f, n, k, codes, scales, null, kind == Kind.NVFP4 ? 0.37f : 1f);
    }

    /** The whole matrix, dequantized to f32, row-major [n * k]. */
    static float[] dequantize(QuantizedTensor w) {
        int n = Math.toIntExact(w.rows());
        int k = Math.toIntExact(w.cols());
        float[] out = new float[n * k];
        float[] row = new float[k];
        for (int i = 0; i < n; i++) {
            w.format().dequantizeRow(w, i, row);
            System.arraycopy(row, 0, out, i * k, k);
        }
        return out;
    }

    private record Ref(Kind kind) implements QuantFormat {
        @Override
        public String name() {
            return switch (kind) {
                case INT4 -> "int4-g32";
                case MXFP4 -> "mxfp4";
                case NVFP4 -> "nvfp4";
            };
        }

        @Override
        public int groupSize() {
            return kind == Kind.NVFP4 ? 16 : 32;
        }

        @Override
        public int bitsPerValue() {
            return 4;
        }

        @Override
        public DType scaleType() {
            return kind == Kind.INT4 ? DType.BF16 : DType.U8;
        }

        @Override
        public long packedBytesPerRow(long cols) {
            return cols / 2;
        }

        @Override
        public long storageBytes(long rows, long cols) {
            return rows * cols / 2 + rows * (cols / groupSize()) * scaleType().bytes();
        }

        @Override
        public void dequantizeRow(QuantizedTensor w, long row, float[] out) {
            int k = Math.toIntExact(w.cols());
            for (int c = 0; c < k; c++) {
                int b = (int) w.codes().getLong(row, c / 2);
                int nib = (c % 2 == 0) ? b & 15 : (b >> 4) & 15;
                int g = c / groupSize();
                out[c] = switch (kind) {
                    case INT4 -> (nib - 8) * w.scales().getFloat(row, g);
                    case MXFP4 -> E2M1[nib] * (float) Math.pow(2, w.scales().getLong(row, g) - 127);
                    // the group scale e4m3(s)·global first, as the kernel does
                    case NVFP4 -> E2M1[nib] * (Numerics.e4m3ToFloat((byte) w.scales().getLong(row, g)) * w.globalScale());
                };
            }
        }

        @Override
        public QuantizedTensor quantize(Tensor weight) {
            throw new UnsupportedOperationException("reference decoder only");
        }
    }
}
