package org.orbitrl.kernels.quant.internal;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

import static org.orbitrl.kernels.quant.internal.CanonicalDot.FS;
import static org.orbitrl.kernels.quant.internal.CanonicalDot.L;

/**
 * Dot products of one 4-bit weight row with 1..M rows of x, decoding the row 16 values at a time
 * straight into registers and feeding each decoded vector to every x row of a tile of 4 (no
 * full-precision copy of the row exists). Codes are the little-endian nibble layout of
 * {@code NibblePacked}: 16 values = 8 bytes = two int32 words, value {@code c} of a word in bits
 * {@code 4c}. Integer codes decode as {@code float(code − zero) · scale}, E2M1 codes as
 * {@code E2M1[code] · scale}: the same f32 values as the formats' {@code dequantizeRow}. Sums follow
 * {@link CanonicalDot}'s order, so a result depends neither on M nor on the row's place in x.
 */
public final class NibbleDot {
    private NibbleDot() {
    }

    private static final VectorSpecies<Integer> IS = FS.length() == 16 ? IntVector.SPECIES_512 : IntVector.SPECIES_256;
    private static final ValueLayout.OfInt WORD = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong TWO_WORDS = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;

    /** Lane l shifts its word right by 4·(l mod 8). */
    private static final IntVector SHIFTS;
    /** Lanes 8..15 (take the second word); unused with 8 lanes. */
    private static final VectorMask<Integer> HIGH;
    /** f32 bits of the E2M1 magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6 (repeated to fill the vector). */
    private static final IntVector MAGNITUDES;

    static {
        int[] shifts = new int[L];
        boolean[] high = new boolean[L];
        int[] mags = new int[L];
        float[] e2m1 = {0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f};
        for (int l = 0; l < L; l++) {
            shifts[l] = 4 * (l % 8);
            high[l] = l >= 8;
            mags[l] = Float.floatToRawIntBits(e2m1[l % 8]);
        }
        SHIFTS = IntVector.fromArray(IS, shifts, 0);
        HIGH = VectorMask.fromArray(IS, high, 0);
        MAGNITUDES = IntVector.fromArray(IS, mags, 0);
    }

    /** The L nibbles starting at byte {@code off} as int lanes 0..15. */
    private static IntVector nibbles(MemorySegment codes, long off) {
        IntVector words;
        if (L == 16) {
            long two = codes.get(TWO_WORDS, off);
            words = IntVector.broadcast(IS, (int) two).blend((int) (two >>> 32), HIGH);
        } else {
            words = IntVector.broadcast(IS, codes.get(WORD, off));
        }
        return words.lanewise(VectorOperators.LSHR, SHIFTS).and(15);
    }

    private static FloatVector decodeInt(MemorySegment codes, long off, int zero, FloatVector scale) {
        return ((FloatVector) nibbles(codes, off).sub(zero).convert(VectorOperators.I2F, 0)).mul(scale);
    }

    private static FloatVector decodeE2m1(MemorySegment codes, long off, FloatVector scale) {
        IntVector n = nibbles(codes, off);
        IntVector bits = n.and(7).selectFrom(MAGNITUDES).or(n.and(8).lanewise(VectorOperators.LSHL, 28));
        return bits.reinterpretAsFloats().mul(scale);
    }

    /**
     * {@code out[i] = Σ_k x[i, k] · w[k]} for x rows {@code i < m}.
     *
     * @param e2m1      codes are E2M1 (else integers with zero points)
     * @param codes     segment holding the row's {@code k/2} code bytes at {@code codeOff}
     * @param k         values per row, a multiple of 16 and of {@code group}
     * @param group     values per scale (16 or 32)
     * @param scales    [k/group] f32 scale per group
     * @param zeros     [k/group] zero code per group (integers only)
     * @param x         f32 [m, k] rows at byte offset {@code xOff}, row stride {@code 4k} bytes
     * @param scratch16 16 floats of scratch
     */
    public static void rowTimesX(boolean e2m1, MemorySegment codes, long codeOff, int k, int group, float[] scales,
                                 int[] zeros, MemorySegment x, long xOff, int m, float[] out, float[] scratch16) {
        long stride = 4L * k;
        int i = 0;
        for (; i + 4 <= m; i += 4) {
            long xo = xOff + i * stride;
            if (e2m1) {
                e2m1Rows4(codes, codeOff, k, group, scales, x, xo, stride, out, i, scratch16);
            } else {
                intRows4(codes, codeOff, k, group, scales, zeros, x, xo, stride, out, i, scratch16);
            }
        }
        for (; i < m; i++) {
            long xo = xOff + i * stride;
            out[i] = e2m1 ? e2m1Row1(codes, codeOff, k, group, scales, x, xo, scratch16)
                    : intRow1(codes, codeOff, k, group, scales, zeros, x, xo, scratch16);
        }
    }

    private static float intRow1(MemorySegment codes, long codeOff, int k, int group, float[] scales, int[] zeros,
                                 MemorySegment x, long xo, float[] scratch16) {
        FloatVector a0 = FloatVector.zero(FS);
        FloatVector a1 = FloatVector.zero(FS);
        int unitsPerGroup = group / 16;
        for (int g = 0, u = 0; g < k / group; g++) {
            FloatVector s = FloatVector.broadcast(FS, scales[g]);
            int z = zeros[g];
            for (int j = 0; j < unitsPerGroup; j++, u++) {
                long co = codeOff + 8L * u;
                long xu = xo + 64L * u;
                a0 = decodeInt(codes, co, z, s).fma(FloatVector.fromMemorySegment(FS, x, xu, LE), a0);
                if (L == 8) {
                    a1 = decodeInt(codes, co + 4, z, s).fma(FloatVector.fromMemorySegment(FS, x, xu + 32, LE), a1);
                }
            }
        }
        return CanonicalDot.reduce(a0, a1, scratch16);
    }

    private static float e2m1Row1(MemorySegment codes, long codeOff, int k, int group, float[] scales,
                                  MemorySegment x, long xo, float[] scratch16) {
        FloatVector a0 = FloatVector.zero(FS);
        FloatVector a1 = FloatVector.zero(FS);
        int unitsPerGroup = group / 16;
        for (int g = 0, u = 0; g < k / group; g++) {
            FloatVector s = FloatVector.broadcast(FS, scales[g]);
            for (int j = 0; j < unitsPerGroup; j++, u++) {
                long co = codeOff + 8L * u;
                long xu = xo + 64L * u;
                a0 = decodeE2m1(codes, co, s).fma(FloatVector.fromMemorySegment(FS, x, xu, LE), a0);
                if (L == 8) {
                    a1 = decodeE2m1(codes, co + 4, s).fma(FloatVector.fromMemorySegment(FS, x, xu + 32, LE), a1);
                }
            }
        }
        return CanonicalDot.reduce(a0, a1, scratch16);
    }

    private static void intRows4(MemorySegment codes, long codeOff, int k, int group, float[] scales, int[] zeros,
                                 MemorySegment x, long xo, long stride, float[] out, int i, float[] scratch16) {
        FloatVector a00 = FloatVector.zero(FS), a10 = a00, a20 = a00, a30 = a00; // lanes 0..L-1 of rows 0..3
        FloatVector a01 = a00, a11 = a00, a21 = a00, a31 = a00;                 // lanes 8..15 when L == 8
        int unitsPerGroup = group / 16;
        for (int g = 0, u = 0; g < k / group; g++) {
            FloatVector s = FloatVector.broadcast(FS, scales[g]);
            int z = zeros[g];
            for (int j = 0; j < unitsPerGroup; j++, u++) {
                long co = codeOff + 8L * u;
                long xu = xo + 64L * u;
                FloatVector w = decodeInt(codes, co, z, s);
                a00 = w.fma(FloatVector.fromMemorySegment(FS, x, xu, LE), a00);
                a10 = w.fma(FloatVector.fromMemorySegment(FS, x, xu + stride, LE), a10);
                a20 = w.fma(FloatVector.fromMemorySegment(FS, x, xu + 2 * stride, LE), a20);
                a30 = w.fma(FloatVector.fromMemorySegment(FS, x, xu + 3 * stride, LE), a30);
                if (L == 8) {
                    FloatVector w1 = decodeInt(codes, co + 4, z, s);
                    a01 = w1.fma(FloatVector.fromMemorySegment(FS, x, xu + 32, LE), a01);
                    a11 = w1.fma(FloatVector.fromMemorySegment(FS, x, xu + 32 + stride, LE), a11);
                    a21 = w1.fma(FloatVector.fromMemorySegment(FS, x, xu + 32 + 2 * stride, LE), a21);
                    a31 = w1.fma(FloatVector.fromMemorySegment(FS, x, xu + 32 + 3 * stride, LE), a31);
                }
            }
        }
        out[i] = CanonicalDot.reduce(a00, a01, scratch16);
        out[i + 1] = CanonicalDot.reduce(a10, a11, scratch16);
        out[i + 2] = CanonicalDot.reduce(a20, a21, scratch16);
        out[i + 3] = CanonicalDot.reduce(a30, a31, scratch16);
    }

    private static void e2m1Rows4(MemorySegment codes, long codeOff, int k, int group, float[] scales,
                                  MemorySegment x, long xo, long stride, float[] out, int i, float[] scratch16) {
        FloatVector a00 = FloatVector.zero(FS), a10 = a00, a20 = a00, a30 = a00;
        FloatVector a01 = a00, a11 = a00, a21 = a00, a31 = a00;
        int unitsPerGroup = group / 16;
        for (int g = 0, u = 0; g < k / group; g++) {
            FloatVector s = FloatVector.broadcast(FS, scales[g]);
            for (int j = 0; j < unitsPerGroup; j++, u++) {
                long co = codeOff + 8L * u;
                long xu = xo + 64L * u;
                FloatVector w = decodeE2m1(codes, co, s);
                a00 = w.fma(FloatVector.fromMemorySegment(FS, x, xu, LE), a00);
                a10 = w.fma(FloatVector.fromMemorySegment(FS, x, xu + stride, LE), a10);
                a20 = w.fma(FloatVector.fromMemorySegment(FS, x, xu + 2 * stride, LE), a20);
                a30 = w.fma(FloatVector.fromMemorySegment(FS, x, xu + 3 * stride, LE), a30);
                if (L == 8) {
                    FloatVector w1 = decodeE2m1(codes, co + 4, s);
                    a01 = w1.fma(FloatVector.fromMemorySegment(FS, x, xu + 32, LE), a01);
                    a11 = w1.fma(FloatVector.fromMemorySegment(FS, x, xu + 32 + stride, LE), a11);
                    a21 = w1.fma(FloatVector.fromMemorySegment(FS, x, xu + 32 + 2 * stride, LE), a21);
                    a31 = w1.fma(FloatVector.fromMemorySegment(FS, x, xu + 32 + 3 * stride, LE), a31);
                }
            }
        }
        out[i] = CanonicalDot.reduce(a00, a01, scratch16);
        out[i + 1] = CanonicalDot.reduce(a10, a11, scratch16);
        out[i + 2] = CanonicalDot.reduce(a20, a21, scratch16);
        out[i + 3] = CanonicalDot.reduce(a30, a31, scratch16);
    }
}
