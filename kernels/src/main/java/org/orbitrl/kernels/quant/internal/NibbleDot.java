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
 * 8 bytes) at a time straight into registers and feeding each decoded vector to a tile of 8 (16-lane
 * vectors) or 4 x rows
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
     * @param acc     scratch of 8·32 floats
     */
    public static void rowTimesX(boolean e2m1, MemorySegment codes, long codeOff, int k, int group, float[] scales,
                                 float[] offsets, float[] xp, int m, float[] out, float[] acc) {
        int i = 0;
        for (; L == 16 && i + 8 <= m; i += 8) {
            rows8(e2m1, codes, codeOff, k, group, scales, offsets, xp, i, acc);
            for (int r = 0; r < 8; r++) {
                out[i + r] = CanonicalDot.tree(acc, r * CanonicalDot.LANES);
            }
        }
        for (; i + 4 <= m; i += 4) {
            // With 8 lanes, positions 0..7 and 8..15 of every unit are two passes over the row.
            rows4(e2m1, codes, codeOff, k, group, scales, offsets, xp, i, SHIFT_A, 0, acc);
            if (L == 8) {
                rows4(e2m1, codes, codeOff, k, group, scales, offsets, xp, i, SHIFT_B, 8, acc);
            }
            for (int r = 0; r < 4; r++) {
                out[i + r] = CanonicalDot.tree(acc, r * CanonicalDot.LANES);
            }
        }
        for (; i < m; i++) {
            row1(e2m1, codes, codeOff, k, group, scales, offsets, xp, i * k, SHIFT_A, 0, acc);
            if (L == 8) {
                row1(e2m1, codes, codeOff, k, group, scales, offsets, xp, i * k, SHIFT_B, 8, acc);
            }
            out[i] = CanonicalDot.tree(acc, 0);
        }
    }

    /*
     * The loops take one unit per iteration and keep the two partial-sum chains in (a, b): unit u
     * goes into a, then the two swap, so even units land in one chain and odd units in the other.
     * After the loop, a holds the even chain when the unit count is even. Each loop computes the
     * positions [pos, pos + L) of every unit and stores them at lanes pos (even chain) and
     * 16 + pos (odd chain) of each row's 32 partial sums in acc.
     */

    private static void row1(boolean e2m1, MemorySegment codes, long codeOff, int k, int group, float[] scales,
                             float[] offsets, float[] xp, int xo, LongVector shifts, int pos, float[] acc) {
        FloatVector a = FloatVector.zero(FS);
        FloatVector b = a;
        int units = k / UNIT;
        int sh = group == 32 ? 1 : 0; // unit -> group
        for (int u = 0; u < units; u++) {
            long bits = codes.get(UNIT_BITS, codeOff + 8L * u);
            FloatVector w = decode(codes(bits, shifts), e2m1, FloatVector.broadcast(FS, scales[u >> sh]),
                    FloatVector.broadcast(FS, offsets[u >> sh]));
            FloatVector n = w.fma(FloatVector.fromArray(FS, xp, xo + UNIT * u + pos), a);
            a = b;
            b = n;
        }
        if (units % 2 != 0) {
            FloatVector t = a;
            a = b;
            b = t;
        }
        a.intoArray(acc, pos);
        b.intoArray(acc, UNIT + pos);
    }

    private static void rows4(boolean e2m1, MemorySegment codes, long codeOff, int k, int group, float[] scales,
                              float[] offsets, float[] xp, int i, LongVector shifts, int pos, float[] acc) {
        FloatVector a0 = FloatVector.zero(FS); // rows i..i+3: chain of the current unit's parity
        FloatVector a1 = a0, a2 = a0, a3 = a0;
        FloatVector b0 = a0, b1 = a0, b2 = a0, b3 = a0; // and the other chain
        int units = k / UNIT;
        int sh = group == 32 ? 1 : 0;
        int x0 = i * k + pos;
        for (int u = 0; u < units; u++) {
            long bits = codes.get(UNIT_BITS, codeOff + 8L * u);
            FloatVector w = decode(codes(bits, shifts), e2m1, FloatVector.broadcast(FS, scales[u >> sh]),
                    FloatVector.broadcast(FS, offsets[u >> sh]));
            int xu = x0 + UNIT * u;
            FloatVector n0 = w.fma(FloatVector.fromArray(FS, xp, xu), a0);
            FloatVector n1 = w.fma(FloatVector.fromArray(FS, xp, xu + k), a1);
            FloatVector n2 = w.fma(FloatVector.fromArray(FS, xp, xu + 2 * k), a2);
            FloatVector n3 = w.fma(FloatVector.fromArray(FS, xp, xu + 3 * k), a3);
            a0 = b0;
            a1 = b1;
            a2 = b2;
            a3 = b3;
            b0 = n0;
            b1 = n1;
            b2 = n2;
            b3 = n3;
        }
        if (units % 2 != 0) {
            FloatVector t = a0;
            a0 = b0;
            b0 = t;
            t = a1;
            a1 = b1;
            b1 = t;
            t = a2;
            a2 = b2;
            b2 = t;
            t = a3;
            a3 = b3;
            b3 = t;
        }
        int lanes = CanonicalDot.LANES;
        a0.intoArray(acc, pos);
        b0.intoArray(acc, UNIT + pos);
        a1.intoArray(acc, lanes + pos);
        b1.intoArray(acc, lanes + UNIT + pos);
        a2.intoArray(acc, 2 * lanes + pos);
        b2.intoArray(acc, 2 * lanes + UNIT + pos);
        a3.intoArray(acc, 3 * lanes + pos);
        b3.intoArray(acc, 3 * lanes + UNIT + pos);
    }

    /** {@link #rows4} for 8 rows of x, used with 16-lane vectors (16 accumulators fit the 32 registers). */
    private static void rows8(boolean e2m1, MemorySegment codes, long codeOff, int k, int group, float[] scales,
                              float[] offsets, float[] xp, int i, float[] acc) {
        FloatVector zero = FloatVector.zero(FS);
        FloatVector a0 = zero, a1 = zero, a2 = zero, a3 = zero, a4 = zero, a5 = zero, a6 = zero, a7 = zero;
        FloatVector b0 = zero, b1 = zero, b2 = zero, b3 = zero, b4 = zero, b5 = zero, b6 = zero, b7 = zero;
        int units = k / UNIT;
        int sh = group == 32 ? 1 : 0;
        int x0 = i * k;
        for (int u = 0; u < units; u++) {
            long bits = codes.get(UNIT_BITS, codeOff + 8L * u);
            FloatVector w = decode(codes(bits, SHIFT_A), e2m1, FloatVector.broadcast(FS, scales[u >> sh]),
                    FloatVector.broadcast(FS, offsets[u >> sh]));
            int xu = x0 + UNIT * u;
            FloatVector n0 = w.fma(FloatVector.fromArray(FS, xp, xu), a0);
            FloatVector n1 = w.fma(FloatVector.fromArray(FS, xp, xu + k), a1);
            FloatVector n2 = w.fma(FloatVector.fromArray(FS, xp, xu + 2 * k), a2);
            FloatVector n3 = w.fma(FloatVector.fromArray(FS, xp, xu + 3 * k), a3);
            FloatVector n4 = w.fma(FloatVector.fromArray(FS, xp, xu + 4 * k), a4);
            FloatVector n5 = w.fma(FloatVector.fromArray(FS, xp, xu + 5 * k), a5);
            FloatVector n6 = w.fma(FloatVector.fromArray(FS, xp, xu + 6 * k), a6);
            FloatVector n7 = w.fma(FloatVector.fromArray(FS, xp, xu + 7 * k), a7);
            a0 = b0;
            a1 = b1;
            a2 = b2;
            a3 = b3;
            a4 = b4;
            a5 = b5;
            a6 = b6;
            a7 = b7;
            b0 = n0;
            b1 = n1;
            b2 = n2;
            b3 = n3;
            b4 = n4;
            b5 = n5;
            b6 = n6;
            b7 = n7;
        }
        if (units % 2 != 0) {
            FloatVector t0 = a0;
            a0 = b0;
            b0 = t0;
            FloatVector t1 = a1;
            a1 = b1;
            b1 = t1;
            FloatVector t2 = a2;
            a2 = b2;
            b2 = t2;
            FloatVector t3 = a3;
            a3 = b3;
            b3 = t3;
            FloatVector t4 = a4;
            a4 = b4;
            b4 = t4;
            FloatVector t5 = a5;
            a5 = b5;
            b5 = t5;
            FloatVector t6 = a6;
            a6 = b6;
            b6 = t6;
            FloatVector t7 = a7;
            a7 = b7;
            b7 = t7;
        }
        int lanes = CanonicalDot.LANES;
        a0.intoArray(acc, 0);
        b0.intoArray(acc, UNIT);
        a1.intoArray(acc, lanes);
        b1.intoArray(acc, lanes + UNIT);
        a2.intoArray(acc, 2 * lanes);
        b2.intoArray(acc, 2 * lanes + UNIT);
        a3.intoArray(acc, 3 * lanes);
        b3.intoArray(acc, 3 * lanes + UNIT);
        a4.intoArray(acc, 4 * lanes);
        b4.intoArray(acc, 4 * lanes + UNIT);
        a5.intoArray(acc, 5 * lanes);
        b5.intoArray(acc, 5 * lanes + UNIT);
        a6.intoArray(acc, 6 * lanes);
        b6.intoArray(acc, 6 * lanes + UNIT);
        a7.intoArray(acc, 7 * lanes);
        b7.intoArray(acc, 7 * lanes + UNIT);
    }
}
