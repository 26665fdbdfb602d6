package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;

import java.util.Arrays;

/**
 * The layout of one quant format, as data: what a block is, how its codes and scale are stored,
 * and what each code means. Each format class builds its descriptor in a static initializer and
 * calls {@link #check()}, so an inconsistent descriptor fails when the class loads. The CPU
 * kernels and the CUDA code generator read the same record.
 *
 * <p>A <em>block</em> is the set of values sharing one scale: {@code blockRows × blockCols}
 * ({@code 1 × 32} for INT4 g32 and MXFP4, {@code 1 × 16} for NVFP4, {@code 128 × 128} for FP8
 * blocks). A stored value is {@code codeTable[code] · scale} (INT4 asymmetric: {@code
 * (codeTable[code] − zero) · scale}; NVFP4: {@code codeTable[code] · scale / globalScale}).
 *
 * @param name           registry name ({@link QuantFormats})
 * @param bitsPerValue   4 or 8
 * @param blockRows      rows sharing one scale (1 for per-row groups)
 * @param blockCols      values along a row sharing one scale (the group size)
 * @param bytesPerBlock  bytes of codes for one row of a block: {@code blockCols · bitsPerValue / 8}
 * @param codeType       element type of the stored code tensor ({@code I32} words, {@code U8}
 *                       bytes, or {@code F8E4M3})
 * @param scaleEncoding  how one scale is stored
 * @param scalePlacement where the scales live, in words (tensor name and shape)
 * @param nibbleOrder    how two 4-bit codes share a byte ({@link NibbleOrder#NONE} for 8-bit codes)
 * @param codeTable      value of each code before scaling, indexed by the raw code ({@code 2^bits} entries)
 * @param zeroPoints     whether blocks carry a zero point
 * @param globalScale    whether the whole matrix carries one more f32 scale
 */
public record QuantDescriptor(String name, int bitsPerValue, int blockRows, int blockCols, int bytesPerBlock,
                              DType codeType, ScaleEncoding scaleEncoding, String scalePlacement,
                              NibbleOrder nibbleOrder, float[] codeTable, boolean zeroPoints, boolean globalScale) {

    /** How a 4-bit pair shares a byte. */
    public enum NibbleOrder {
        /** Element {@code 2k} in bits 0-3 of byte {@code k}, element {@code 2k+1} in bits 4-7. */
        LOW_FIRST,
        /** 8-bit codes: one value per byte. */
        NONE
    }

    /** How one scale is stored. */
    public enum ScaleEncoding {
        /** bfloat16, the scale itself. */
        BF16(DType.BF16),
        /** f32, the scale itself. */
        F32(DType.F32),
        /** FP8 E4M3 (fn), the scale itself. */
        E4M3(DType.F8E4M3),
        /** OCP E8M0: one unsigned byte {@code e}, scale {@code 2^(e−127)}; {@code 0xFF} is NaN. */
        E8M0(DType.U8);

        private final DType storage;

        ScaleEncoding(DType storage) {
            this.storage = storage;
        }

        /** The {@link DType} Orbit stores this encoding in (E8M0 as raw bytes). */
        public DType storage() {
            return storage;
        }
    }

    /** Throws {@link IllegalStateException} if the fields contradict each other; returns this. */
    public QuantDescriptor check() {
        require(bitsPerValue == 4 || bitsPerValue == 8, "bitsPerValue must be 4 or 8");
        require(blockRows >= 1 && blockCols >= 1, "block must be non-empty");
        require(bytesPerBlock * 8L == (long) blockCols * bitsPerValue,
                "bytesPerBlock " + bytesPerBlock + " != blockCols*bits/8 = " + blockCols * bitsPerValue / 8.0);
        require(codeTable.length == 1 << bitsPerValue,
                "codeTable has " + codeTable.length + " entries, expected " + (1 << bitsPerValue));
        require((bitsPerValue == 4) == (nibbleOrder != NibbleOrder.NONE), "nibbleOrder must be NONE exactly for 8-bit codes");
        require(bitsPerValue == 8 ? codeType.bytes() == 1 : codeType == DType.I32 || codeType == DType.U8,
                "codeType " + codeType + " cannot hold " + bitsPerValue + "-bit codes");
        require(bitsPerValue == 8 || blockCols % 8 == 0, "4-bit blocks must fill whole int32 words (8 values)");
        require(!(zeroPoints && globalScale), "a format has zero points or a global scale, not both");
        return this;
    }

    private void require(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException("quant format " + name + ": inconsistent descriptor: " + what);
        }
    }

    /** Element type of the scale tensor. */
    public DType scaleType() {
        return scaleEncoding.storage();
    }

    @Override
    public float[] codeTable() {
        return codeTable.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof QuantDescriptor d && d.name.equals(name);
    }

    @Override
    public int hashCode() {
        return name.hashCode();
    }

    @Override
    public String toString() {
        return "QuantDescriptor[" + name + ": " + bitsPerValue + "-bit " + codeType + " codes, block " + blockRows + "x"
                + blockCols + " (" + bytesPerBlock + " B/row), scale " + scaleEncoding + " " + scalePlacement + ", nibbles "
                + nibbleOrder + (zeroPoints ? ", zero points" : "") + (globalScale ? ", global scale" : "") + ", codes "
                + Arrays.toString(codeTable) + "]";
    }
}
