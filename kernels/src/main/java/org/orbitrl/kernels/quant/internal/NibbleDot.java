package org.orbitrl.kernels.quant.internal;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.LongVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

import static org.orbitrl.kernels.quant.internal.CanonicalDot.FS;
import static org.orbitrl.kernels.quant.internal.CanonicalDot.L;
import static org.orbitrl.kernels.quant.internal.CanonicalDot.UNIT;

/**
 * Dot products of one 4-bit weight row with 1..M rows of x, decoding the row one unit (16 values,
 * 8 bytes) at a time straight into registers and feeding each decoded vector to a tile of 4 x rows
 * (no full-precision copy of the row exists). A unit is one 64-bit little-endian load, broadcast to
 * the 64-bit lanes and shifted right by 4·lane, which leaves nibbles 0, 8, 1, 9, … 7, 15 in the 32-bit
 * lanes: x is read {@linkplain CanonicalDot#permuteX permuted} to match. Integer codes decode as
 * {@code fma(float(code), scale, −zero·scale)} (exact, = {@code float(code − zero)·scale}), E2M1
 * codes as {@code E2M1[code]·scale}: the f32 values of the formats' {@code dequantizeRow}. Sums
 * follow {@link CanonicalDot}: even units into one chain, odd units into another.
 */
public final class NibbleDot {
    private NibbleDot() {
    }

    private static final VectorSpecies<Long> LS = L == 16 ? LongVector.SPECIES_512 : LongVector.SPECIES_256;
    private static final VectorSpecies<Integer> IS = L == 16 ? IntVector.SPECIES_512 : IntVector.SPECIES_256;
    private static final ValueLayout.OfLong UNIT_BITS = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** Right shifts of the 64-bit lanes giving unit positions 0..L-1 (and, with 8 lanes, 8..15). */
    private static final LongVector SHIFT_A;
    private static final LongVector SHIFT_B;
    /** f32 bits of the 16 signed E2M1 values (16 lanes), or of the 8 magnitudes (8 lanes). */
    private static final IntVector E2M1_BITS;

    static {
        int longs = L / 2;
        long[] a = new long[longs];
        long[] b = new long[longs];
        for (int i = 0; i < longs; i++) {
            a[i] = 4L * i;
            b[i] = 4L * (i + longs);
        }
        SHIFT_A = LongVector.fromArray(LS, a, 0);
        SHIFT_B = LongVector.fromArray(LS, b, 0);
        float[] e2m1 = {0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f, -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f};
        int[] bits = new int[L];
        for (int l = 0; l < L; l++) {
            bits[l] = Float.floatToRawIntBits(e2m1[l]);
        }
        E2M1_BITS = IntVector.fromArray(IS, bits, 0);
    }

    /** Codes of unit positions 0..L-1 (shift {@code SHIFT_A}) or 8..15 ({@code SHIFT_B}, 8 lanes only). */
    private static IntVector codes(long unit, LongVector shifts) {
        return LongVector.broadcast(LS, unit).lanewise(VectorOperators.LSHR, shifts).reinterpretAsInts().and(15);
    }

    private static FloatVector decode(IntVector code, boolean e2m1, FloatVector scale, FloatVector offset) {
        if (!e2m1) {
            return ((FloatVector) code.convert(VectorOperators.I2F, 0)).fma(scale, offset);
        }
        IntVector bits = L == 16 ? code.selectFrom(E2M1_BITS)
                : code.and(7).selectFrom(E2M1_BITS).or(code.and(8).lanewise(VectorOperators.LSHL, 28));
        return bits.reinterpretAsFloats().mul(scale);
    }

    /**
     * {@code out[i] = Σ_k x[i, k] · w[k]} for x rows {@code i < m}.
     *
     * @param e2m1    codes are E2M1 (else integers: value {@code (code − zero)·scale})
     * @param codes   segment holding the row's {@code k/2} code bytes at {@code codeOff}
     * @param k       values per row, a multiple of 16 and of {@code group}
     * @param group   values per scale (16 or 32)
     * @param scales  [k/group] f32 scale per group
     * @param offsets [k/group] {@code −zero·scale} per group (integers; ignored for E2M1)
     * @param xp      x [m, k] {@linkplain CanonicalDot#permuteX permuted}
     * @param scratch 32 floats
     */
    public static void rowTimesX(boolean e2m1, MemorySegment codes, long codeOff, int k, int group, float[] scales,
                                 float[] offsets, float[] xp, int m, float[] out, float[] scratch) {
        int i = 0;
        for (; i + 4 <= m; i += 4) {
            rows4(e2m1, codes, codeOff, k, group, scales, offsets, xp, i, out, scratch);
        }
        for (; i < m; i++) {
            out[i] = row1(e2m1, codes, codeOff, k, group, scales, offsets, xp, i * k, scratch);
        }
    }

    /** Decoded positions 0..L-1 (or, with {@code shifts = SHIFT_B}, 8..15) of unit {@code u} of the row. */
    private static FloatVector unit(MemorySegment codes, long codeOff, int u, LongVector shifts, boolean e2m1,
                                    float[] scales, float[] offsets, int unitShift) {
        int g = u >> unitShift;
        long bits = codes.get(UNIT_BITS, codeOff + 8L * u);
        return decode(codes(bits, shifts), e2m1, FloatVector.broadcast(FS, scales[g]), FloatVector.broadcast(FS, offsets[g]));
    }

    private static float row1(boolean e2m1, MemorySegment codes, long codeOff, int k, int group, float[] scales,
                              float[] offsets, float[] xp, int xo, float[] scratch) {
        FloatVector e0 = FloatVector.zero(FS); // even units, positions 0..L-1
        FloatVector e1 = e0;                   // even units, positions 8..15 (8 lanes)
        FloatVector o0 = e0;                   // odd units
        FloatVector o1 = e0;
        int units = k / UNIT;
        int sh = group == 32 ? 1 : 0;          // unit -> group
        int u = 0;
        for (; u + 1 < units; u += 2) {
            int xu = xo + UNIT * u;
            e0 = unit(codes, codeOff, u, SHIFT_A, e2m1, scales, offsets, sh).fma(FloatVector.fromArray(FS, xp, xu), e0);
            o0 = unit(codes, codeOff, u + 1, SHIFT_A, e2m1, scales, offsets, sh)
                    .fma(FloatVector.fromArray(FS, xp, xu + UNIT), o0);
            if (L == 8) {
                e1 = unit(codes, codeOff, u, SHIFT_B, e2m1, scales, offsets, sh).fma(FloatVector.fromArray(FS, xp, xu + 8), e1);
                o1 = unit(codes, codeOff, u + 1, SHIFT_B, e2m1, scales, offsets, sh)
                        .fma(FloatVector.fromArray(FS, xp, xu + UNIT + 8), o1);
            }
        }
        if (u < units) { // a last, even unit
            int xu = xo + UNIT * u;
            e0 = unit(codes, codeOff, u, SHIFT_A, e2m1, scales, offsets, sh).fma(FloatVector.fromArray(FS, xp, xu), e0);
            if (L == 8) {
                e1 = unit(codes, codeOff, u, SHIFT_B, e2m1, scales, offsets, sh).fma(FloatVector.fromArray(FS, xp, xu + 8), e1);
            }
        }
        e0.intoArray(scratch, 0); // the 32 partial sums: even units, then odd, positions in decoded order
        o0.intoArray(scratch, UNIT);
        if (L == 8) {
            e1.intoArray(scratch, 8);
            o1.intoArray(scratch, UNIT + 8);
        }
        return CanonicalDot.tree(scratch);
    }

    private static void rows4(boolean e2m1, MemorySegment codes, long codeOff, int k, int group, float[] scales,
                              float[] offsets, float[] xp, int i, float[] out, float[] scratch) {
        FloatVector zero = FloatVector.zero(FS);
        // Partial sums of rows i..i+3: even/odd unit chains, positions 0..L-1 (and 8..15 with 8 lanes).
        FloatVector e00 = zero, e10 = zero, e20 = zero, e30 = zero, o00 = zero, o10 = zero, o20 = zero, o30 = zero;
        FloatVector e01 = zero, e11 = zero, e21 = zero, e31 = zero, o01 = zero, o11 = zero, o21 = zero, o31 = zero;
        int units = k / UNIT;
        int sh = group == 32 ? 1 : 0;
        int x0 = i * k;
        for (int u = 0; u < units; u += 2) {
            boolean odd = u + 1 < units; // a last unit without an odd partner
            int xu = x0 + UNIT * u;
            FloatVector w = unit(codes, codeOff, u, SHIFT_A, e2m1, scales, offsets, sh);
            e00 = w.fma(FloatVector.fromArray(FS, xp, xu), e00);
            e10 = w.fma(FloatVector.fromArray(FS, xp, xu + k), e10);
            e20 = w.fma(FloatVector.fromArray(FS, xp, xu + 2 * k), e20);
            e30 = w.fma(FloatVector.fromArray(FS, xp, xu + 3 * k), e30);
            if (L == 8) {
                FloatVector v = unit(codes, codeOff, u, SHIFT_B, e2m1, scales, offsets, sh);
                e01 = v.fma(FloatVector.fromArray(FS, xp, xu + 8), e01);
                e11 = v.fma(FloatVector.fromArray(FS, xp, xu + 8 + k), e11);
                e21 = v.fma(FloatVector.fromArray(FS, xp, xu + 8 + 2 * k), e21);
                e31 = v.fma(FloatVector.fromArray(FS, xp, xu + 8 + 3 * k), e31);
            }
            if (!odd) {
                break;
            }
            xu += UNIT;
            w = unit(codes, codeOff, u + 1, SHIFT_A, e2m1, scales, offsets, sh);
            o00 = w.fma(FloatVector.fromArray(FS, xp, xu), o00);
            o10 = w.fma(FloatVector.fromArray(FS, xp, xu + k), o10);
            o20 = w.fma(FloatVector.fromArray(FS, xp, xu + 2 * k), o20);
            o30 = w.fma(FloatVector.fromArray(FS, xp, xu + 3 * k), o30);
            if (L == 8) {
                FloatVector v = unit(codes, codeOff, u + 1, SHIFT_B, e2m1, scales, offsets, sh);
                o01 = v.fma(FloatVector.fromArray(FS, xp, xu + 8), o01);
                o11 = v.fma(FloatVector.fromArray(FS, xp, xu + 8 + k), o11);
                o21 = v.fma(FloatVector.fromArray(FS, xp, xu + 8 + 2 * k), o21);
                o31 = v.fma(FloatVector.fromArray(FS, xp, xu + 8 + 3 * k), o31);
            }
        }
        e00.intoArray(scratch, 0);
        o00.intoArray(scratch, UNIT);
        if (L == 8) {
            e01.intoArray(scratch, 8);
            o01.intoArray(scratch, UNIT + 8);
        }
        out[i] = CanonicalDot.tree(scratch);
        e10.intoArray(scratch, 0);
        o10.intoArray(scratch, UNIT);
        if (L == 8) {
            e11.intoArray(scratch, 8);
            o11.intoArray(scratch, UNIT + 8);
        }
        out[i + 1] = CanonicalDot.tree(scratch);
        e20.intoArray(scratch, 0);
        o20.intoArray(scratch, UNIT);
        if (L == 8) {
            e21.intoArray(scratch, 8);
            o21.intoArray(scratch, UNIT + 8);
        }
        out[i + 2] = CanonicalDot.tree(scratch);
        e30.intoArray(scratch, 0);
        o30.intoArray(scratch, UNIT);
        if (L == 8) {
            e31.intoArray(scratch, 8);
            o31.intoArray(scratch, UNIT + 8);
        }
        out[i + 3] = CanonicalDot.tree(scratch);
    }
}
