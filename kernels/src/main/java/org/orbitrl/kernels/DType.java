package org.orbitrl.kernels;

/**
 * Element types a {@link Tensor} can hold. Sizes are in bytes per element; sub-byte packed
 * formats (INT4, FP4) are not element types: they live in {@code org.orbitrl.kernels.quant}
 * as byte tensors described by a {@code QuantFormat}.
 */
public enum DType {
    F32(4, "F32"),
    BF16(2, "BF16"),
    F16(2, "F16"),
    F8E4M3(1, "F8_E4M3"),
    I8(1, "I8"),
    I32(4, "I32"),
    I64(8, "I64"),
    U8(1, "U8");

    private final int bytes;
    private final String safetensorsName;

    DType(int bytes, String safetensorsName) {
        this.bytes = bytes;
        this.safetensorsName = safetensorsName;
    }

    /** Bytes per element. */
    public int bytes() {
        return bytes;
    }

    /** The dtype string safetensors headers use ({@code "BF16"}, {@code "F8_E4M3"}, ...). */
    public String safetensorsName() {
        return safetensorsName;
    }

    public boolean isFloatingPoint() {
        return this == F32 || this == BF16 || this == F16 || this == F8E4M3;
    }

    /**
     * The dtype for a safetensors dtype string, or {@code null} if Orbit has none. {@code F8_E8M0}
     * (block-scale exponent bytes, {@code float8_e8m0fnu}) is read as its raw bytes, {@link #U8}.
     */
    public static DType fromSafetensors(String name) {
        if ("F8_E8M0".equals(name)) {
            return U8;
        }
        for (DType d : values()) {
            if (d.safetensorsName.equals(name)) {
                return d;
            }
        }
        return null;
    }
}
