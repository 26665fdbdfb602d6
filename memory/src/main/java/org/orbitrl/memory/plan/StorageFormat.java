package org.orbitrl.memory.plan;

import java.util.Locale;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantFormats;

/**
 * How one weight matrix {@code [rows, cols]} is stored on the device, with its exact byte count:
 * packed codes plus every scale and zero point, groups running along {@code cols} (the input
 * dimension). The quantized formats take their sizes from the kernels' own descriptors
 * ({@link QuantFormat#storageBytes}), the same ones the loaders and the rollout engine use.
 */
public enum StorageFormat {
    /** 4 bytes per value. */
    F32("f32", null),
    /** 2 bytes per value. */
    BF16("bf16", null),
    /** E4M3 codes, one f32 scale per 128x128 block (DeepSeek {@code weight_scale_inv}). */
    FP8_BLOCK128("fp8", "fp8-block128"),
    /** E4M3 codes, one E8M0 (power-of-two) scale byte per 128x128 block ({@code scale_fmt: ue8m0}). */
    FP8_BLOCK128_UE8M0("fp8-ue8m0", "fp8-block128-ue8m0"),
    /**
     * compressed-tensors {@code pack-quantized} symmetric INT4 (Kimi-K2.x): eight codes per int32
     * along a row, one bf16 scale per 32 values.
     */
    INT4_G32("int4", "int4-g32"),
    /** The asymmetric variant: also a 4-bit zero point per group, packed eight to an int32 down the rows. */
    INT4_G32_ZP("int4-zp", "int4-g32-asym"),
    /** MXFP4 (gpt-oss, DeepSeek V4 experts): E2M1 codes two to a byte, one E8M0 scale byte per 32 values. */
    MXFP4("mxfp4", "mxfp4"),
    /** NVFP4: E2M1 codes two to a byte, one E4M3 scale byte per 16 values, one f32 global scale per tensor. */
    NVFP4("nvfp4", "nvfp4");

    private final String id;
    private final String kernelFormat;

    StorageFormat(String id, String kernelFormat) {
        this.id = id;
        this.kernelFormat = kernelFormat;
    }

    /** The name used on the command line and in tables. */
    public String id() {
        return id;
    }

    /** The kernels' format, or null for plain f32/bf16. */
    public QuantFormat quantFormat() {
        return kernelFormat == null ? null : QuantFormats.byName(kernelFormat);
    }

    /**
     * Exact bytes of one {@code [rows, cols]} matrix.
     *
     * @throws IllegalArgumentException if {@code cols} is not a whole number of the format's groups
     */
    public long bytes(long rows, long cols) {
        if (rows <= 0 || cols <= 0) {
            throw new IllegalArgumentException(id + ": bad matrix [" + rows + ", " + cols + "]");
        }
        if (this == F32 || this == BF16) {
            return Math.multiplyExact(rows * cols, this == F32 ? 4L : 2L);
        }
        QuantFormat q = quantFormat();
        if (q.descriptor().blockRows() == 1 && cols % q.groupSize() != 0) {
            throw new IllegalArgumentException("a [" + rows + ", " + cols + "] matrix cannot be stored as " + q.name()
                    + ": its " + cols + " columns are not a whole number of " + q.groupSize() + "-value groups");
        }
        return q.storageBytes(rows, cols);
    }

    /** True for the formats that hold fewer bits than bf16 and must be dequantized for a bf16 GEMM. */
    public boolean isQuantized() {
        return kernelFormat != null;
    }

    /** The format named {@code s} ({@code int4}, {@code mxfp4}, {@code fp4} = MXFP4, {@code fp8}, ...). */
    public static StorageFormat parse(String s) {
        String k = s.trim().toLowerCase(Locale.ROOT);
        for (StorageFormat f : values()) {
            if (f.id.equals(k) || k.equals(f.kernelFormat)) {
                return f;
            }
        }
        return switch (k) {
            case "fp4" -> MXFP4;
            case "float32" -> F32;
            case "bfloat16" -> BF16;
            default -> throw new IllegalArgumentException("unknown storage format '" + s + "'; expected one of "
                    + java.util.Arrays.stream(values()).map(StorageFormat::id).toList() + " or fp4 (= mxfp4)");
        };
    }
}
