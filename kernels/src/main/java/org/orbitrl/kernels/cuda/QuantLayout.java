package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * The quantized layouts the CUDA kernels read, matched to a {@link QuantizedTensor} by its format's
 * name and checked against its parts. In all of them a [N, K] matrix stores 4-bit codes two to a
 * byte, the even element in the low nibble, K/2 bytes a row (an i32 [N, K/8] tensor packed
 * little-endian as compressed-tensors does has the same bytes), and K is a multiple of 32.
 *
 * <ul>
 *   <li>{@code int4-g32} (compressed-tensors {@code pack-quantized}, symmetric): code c in 0..15 is
 *       the value c - 8; scales bf16 [N, K/32].</li>
 *   <li>{@code mxfp4} (OCP MX, gpt-oss): codes are E2M1; scales E8M0 as u8 [N, K/32], 2^(s-127).</li>
 *   <li>{@code nvfp4}: codes are E2M1; scales E4M3 (u8 or f8e4m3) [N, K/16], times the global scale.</li>
 * </ul>
 */
enum QuantLayout {
    INT4("int4", 32, DType.BF16),
    MXFP4("mxfp4", 32, DType.U8),
    NVFP4("nvfp4", 16, DType.U8);

    private final String kernelSuffix;
    private final int group;
    private final DType scaleType;

    QuantLayout(String kernelSuffix, int group, DType scaleType) {
        this.kernelSuffix = kernelSuffix;
        this.group = group;
        this.scaleType = scaleType;
    }

    String kernelSuffix() {
        return kernelSuffix;
    }

    static QuantLayout of(QuantizedTensor w, CudaContext ctx) {
        String name = w.format().name();
        QuantLayout l = switch (name) {
            case "int4-g32", "int4" -> INT4;
            case "mxfp4" -> MXFP4;
            case "nvfp4" -> NVFP4;
            default -> throw new UnsupportedOperationException("the CUDA backend has no kernel for quant format '" + name
                    + "' of " + w + " (supported: int4-g32 symmetric, mxfp4, nvfp4)");
        };
        if (w.zeros() != null) {
            throw new UnsupportedOperationException("the CUDA backend has no kernel for " + w + " with zero points");
        }
        if (w.format().groupSize() != l.group || w.cols() % 32 != 0) {
            throw new IllegalArgumentException(w + ": the CUDA " + name + " kernels need group size " + l.group
                    + " and a column count divisible by 32, got group " + w.format().groupSize() + ", " + w.cols() + " columns");
        }
        Tensor codes = ctx.devContiguous("quantized weight codes", w.codes(), null);
        Tensor scales = ctx.devContiguous("quantized weight scales", w.scales(), null);
        long n = w.rows();
        long k = w.cols();
        if (codes.byteSize() != n * k / 2) {
            throw new IllegalArgumentException(w + ": codes " + codes + " must hold " + n * k / 2 + " bytes (4 bits a value)");
        }
        boolean scaleOk = scales.dtype() == l.scaleType || (l == NVFP4 && scales.dtype() == DType.F8E4M3);
        if (!scaleOk || scales.numel() != n * (k / l.group)) {
            throw new IllegalArgumentException(w + ": scales " + scales + " must be " + l.scaleType + " with "
                    + n * (k / l.group) + " elements ([" + n + ", " + k / l.group + "])");
        }
        return l;
    }
}
