package org.orbitrl.memory.plan;

import java.util.Locale;

/**
 * How one weight matrix {@code [rows, cols]} is stored on the device, with its exact byte count:
 * packed codes plus every scale and zero point, groups running along {@code cols} (the input
 * dimension), partial groups and blocks rounded up.
 */
public enum StorageFormat {
    /** 4 bytes per value. */
    F32("f32"),
    /** 2 bytes per value. */
    BF16("bf16"),
    /** E4M3 codes, one f32 scale per 128x128 block (DeepSeek {@code weight_scale_inv}). */
    FP8_BLOCK128("fp8"),
    /**
     * compressed-tensors {@code pack-quantized} symmetric INT4 (Kimi-K2.x): eight codes per int32
     * along a row, one bf16 scale per 32 values.
     */
    INT4_G32("int4"),
    /** The asymmetric variant: also a 4-bit zero point per group, packed eight to an int32 down the rows. */
    INT4_G32_ZP("int4-zp"),
    /** MXFP4 (gpt-oss, DeepSeek V4 experts): E2M1 codes two to a byte, one E8M0 scale byte per 32 values. */
    MXFP4("mxfp4"),
    /** NVFP4: E2M1 codes two to a byte, one E4M3 scale byte per 16 values, one f32 global scale per tensor. */
    NVFP4("nvfp4");

    private final String id;

    StorageFormat(String id) {
        this.id = id;
    }

    /** The name used on the command line and in tables. */
    public String id() {
        return id;
    }

    /** Exact bytes of one {@code [rows, cols]} matrix. */
    public long bytes(long rows, long cols) {
        if (rows <= 0 || cols <= 0) {
            throw new IllegalArgumentException(id + ": bad matrix [" + rows + ", " + cols + "]");
        }
        return switch (this) {
            case F32 -> Math.multiplyExact(rows * cols, 4L);
            case BF16 -> Math.multiplyExact(rows * cols, 2L);
            case FP8_BLOCK128 -> rows * cols + ceil(rows, 128) * ceil(cols, 128) * 4;
            case INT4_G32 -> rows * ceil(cols, 8) * 4 + rows * ceil(cols, 32) * 2;
            case INT4_G32_ZP -> rows * ceil(cols, 8) * 4 + rows * ceil(cols, 32) * 2 + ceil(rows, 8) * ceil(cols, 32) * 4;
            case MXFP4 -> rows * ceil(cols, 32) * (16 + 1);
            case NVFP4 -> rows * ceil(cols, 16) * (8 + 1) + 4;
        };
    }

    /** True for the formats that hold fewer bits than bf16 and must be dequantized for a bf16 GEMM. */
    public boolean isQuantized() {
        return this != F32 && this != BF16;
    }

    private static long ceil(long a, long b) {
        return (a + b - 1) / b;
    }

    /** The format named {@code s} ({@code int4}, {@code mxfp4}, {@code fp4} = MXFP4, {@code fp8}, ...). */
    public static StorageFormat parse(String s) {
        String k = s.trim().toLowerCase(Locale.ROOT);
        for (StorageFormat f : values()) {
            if (f.id.equals(k)) {
                return f;
            }
        }
        return switch (k) {
            case "fp4" -> MXFP4;
            case "int4-g32", "w4a16" -> INT4_G32;
            case "fp8-block128", "fp8_e4m3" -> FP8_BLOCK128;
            case "float32" -> F32;
            case "bfloat16" -> BF16;
            default -> throw new IllegalArgumentException("unknown storage format '" + s + "'; expected one of "
                    + java.util.Arrays.stream(values()).map(StorageFormat::id).toList() + " or fp4 (= mxfp4)");
        };
    }
}
