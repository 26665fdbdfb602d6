package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.quant.QuantizedTensor;

/**
 * The quantized formats the CUDA kernels read, matched to a {@link QuantizedTensor} by its format's
 * name (the layouts are those the format classes of {@code org.orbitrl.kernels.quant} document and
 * check when the tensor is built). In all of them a [N, K] matrix stores 4-bit codes two to a byte,
 * the even element in the low nibble, K/2 bytes a row (compressed-tensors' int32 words [N, K/8]
 * are the same bytes), and K is a multiple of 32.
 *
 * <ul>
 *   <li>{@code int4-g32}, {@code int4-g32-asym}: {@code w = (u − z)·scale}, scales bf16 [N, K/32]; z = 8,
 *       or the zero nibble packed along rows in zeros i32 [ceil(N/8), K/32].</li>
 *   <li>{@code mxfp4}: E2M1 codes; scales E8M0 u8 [N, K/32], 2^(s−127).</li>
 *   <li>{@code nvfp4}: E2M1 codes; scales E4M3 [N, K/16]; the global scale divides.</li>
 * </ul>
 * FP8 block formats have no CUDA kernel yet.
 */
enum QuantLayout {
    INT4("int4"),
    MXFP4("mxfp4"),
    NVFP4("nvfp4");

    private final String kernelSuffix;

    QuantLayout(String kernelSuffix) {
        this.kernelSuffix = kernelSuffix;
    }

    String kernelSuffix() {
        return kernelSuffix;
    }

    static QuantLayout of(QuantizedTensor w, CudaContext ctx) {
        String name = w.format().name();
        QuantLayout l = switch (name) {
            case "int4-g32", "int4-g32-asym" -> INT4;
            case "mxfp4" -> MXFP4;
            case "nvfp4" -> NVFP4;
            default -> throw new UnsupportedOperationException("the CUDA backend has no kernel for quant format '" + name
                    + "' of " + w + " (it has int4-g32, int4-g32-asym, mxfp4, nvfp4)");
        };
        if (w.cols() % 32 != 0) {
            throw new IllegalArgumentException(w + ": the CUDA kernels need a column count divisible by 32, got " + w.cols());
        }
        ctx.devContiguous("quantized weight codes", w.codes(), null);
        ctx.devContiguous("quantized weight scales", w.scales(), null);
        if (w.zeros() != null) {
            ctx.devContiguous("quantized weight zero points", w.zeros(), DType.I32);
        }
        if (w.codes().byteSize() != w.rows() * w.cols() / 2) {
            throw new IllegalArgumentException(w + ": codes " + w.codes() + " must hold " + w.rows() * w.cols() / 2 + " bytes");
        }
        return l;
    }
}
