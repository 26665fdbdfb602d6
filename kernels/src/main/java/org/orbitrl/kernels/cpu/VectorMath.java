package org.orbitrl.kernels.cpu;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorShuffle;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.nio.ByteOrder;

/**
 * The shared numerical building blocks of the CPU kernels, each with a fixed evaluation order so
 * that results never depend on how work was split:
 * <ul>
 *   <li>{@link #hsum}: the horizontal sum of a vector's lanes by a fixed butterfly (never
 *       {@code reduceLanes(ADD)}, whose order the Vector API leaves unspecified and which may
 *       differ between the interpreter and compiled code).</li>
 *   <li>The canonical reduction of a row of length n: lane-wise accumulation over the first
 *       {@code n - n % L} elements in steps of L, {@link #hsum}, then the remaining elements one
 *       by one with scalar FMA. Every kernel that reduces uses exactly this order.</li>
 *   <li>{@link #exp}: a polynomial exp built only from IEEE lane-wise operations, so the vector
 *       and scalar versions agree bit for bit (the Vector API's {@code EXP} may use a different
 *       algorithm when compiled than when interpreted).</li>
 * </ul>
 */
final class VectorMath {
    private VectorMath() {
    }

    static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;
    static final int L = F.length();
    static final VectorSpecies<Integer> I = VectorSpecies.of(int.class, F.vectorShape());
    /** Shorts with as many lanes as {@link #F}: bf16 rows are loaded through it and widened. */
    static final VectorSpecies<Short> S = VectorSpecies.of(short.class, VectorShape.forBitSize(F.vectorBitSize() / 2));
    static final ByteOrder LE = ByteOrder.LITTLE_ENDIAN;

    private static final VectorShuffle<Float> X32 = L >= 64 ? xor(32) : null;
    private static final VectorShuffle<Float> X16 = L >= 32 ? xor(16) : null;
    private static final VectorShuffle<Float> X8 = L >= 16 ? xor(8) : null;
    private static final VectorShuffle<Float> X4 = L >= 8 ? xor(4) : null;
    private static final VectorShuffle<Float> X2 = L >= 4 ? xor(2) : null;
    private static final VectorShuffle<Float> X1 = xor(1);

    static {
        if (L < 4 || L > 64) {
            throw new IllegalStateException("CPU backend needs 4 to 64 float lanes, the preferred species has " + L);
        }
    }

    private static VectorShuffle<Float> xor(int s) {
        return VectorShuffle.fromOp(F, i -> i ^ s);
    }

    /** Sum of the lanes, by a fixed butterfly: lane i is added to lane i^(L/2), then i^(L/4), ... */
    static float hsum(FloatVector v) {
        if (L >= 64) {
            v = v.add(v.rearrange(X32));
        }
        if (L >= 32) {
            v = v.add(v.rearrange(X16));
        }
        if (L >= 16) {
            v = v.add(v.rearrange(X8));
        }
        if (L >= 8) {
            v = v.add(v.rearrange(X4));
        }
        v = v.add(v.rearrange(X2));
        v = v.add(v.rearrange(X1));
        return v.lane(0);
    }

    /** Widens L bf16 values at byte offset {@code off} to f32 (exact). */
    static FloatVector bf16(MemorySegment seg, long off) {
        ShortVector s = ShortVector.fromMemorySegment(S, seg, off, LE);
        return ((IntVector) s.convertShape(VectorOperators.S2I, I, 0))
                .lanewise(VectorOperators.LSHL, 16)
                .reinterpretAsFloats();
    }

    static float bf16Scalar(MemorySegment seg, long off) {
        return Float.intBitsToFloat((seg.get(java.lang.foreign.ValueLayout.JAVA_SHORT_UNALIGNED, off) & 0xFFFF) << 16);
    }

    /** Rounds f32 lanes to bf16 bits (round to nearest even, NaN kept), as {@link org.orbitrl.kernels.Numerics#floatToBf16}. */
    static void storeBf16(FloatVector v, MemorySegment seg, long off) {
        IntVector x = v.reinterpretAsInts();
        IntVector lsb = x.lanewise(VectorOperators.LSHR, 16).and(1);
        IntVector rounded = x.add(0x7FFF).add(lsb).lanewise(VectorOperators.LSHR, 16);
        VectorMask<Integer> nan = x.and(0x7FFFFFFF).compare(VectorOperators.GT, 0x7F800000);
        rounded = rounded.blend(x.lanewise(VectorOperators.LSHR, 16).or(0x40), nan);
        ShortVector s = (ShortVector) rounded.convertShape(VectorOperators.I2S, S, 0);
        s.intoMemorySegment(seg, off, LE);
    }

    // ---------------------------------------------------------------- exp

    private static final float EXP_HI = 88.3762626647949f;   // largest x with 2^round(x/ln2) <= 2^127
    private static final float EXP_LO = -87.33654475f;       // ln(2^-126): below it the result is flushed to 0
    private static final float LOG2E = 1.44269504088896341f;
    private static final float ROUND = 12582912f;            // 1.5 * 2^23: (t + ROUND) - ROUND rounds t to an integer
    private static final float LN2_HI = 0.693359375f;
    private static final float LN2_LO = -2.12194440e-4f;
    private static final float P0 = 1.9875691500e-4f;
    private static final float P1 = 1.3981999507e-3f;
    private static final float P2 = 8.3334519073e-3f;
    private static final float P3 = 4.1665795894e-2f;
    private static final float P4 = 1.6666665459e-1f;
    private static final float P5 = 5.0000001201e-1f;

    /**
     * e^x within 2 ulp of the correctly rounded value on [{@code -87.34}, {@code 88.37}]; 0 below,
     * +Inf above, NaN for NaN. Lane-wise identical to {@link #exp(float)}.
     */
    static FloatVector exp(FloatVector x) {
        VectorMask<Float> over = x.compare(VectorOperators.GT, EXP_HI);
        VectorMask<Float> under = x.compare(VectorOperators.LT, EXP_LO);
        FloatVector t = x.mul(LOG2E);
        FloatVector n = t.add(ROUND).sub(ROUND);
        FloatVector r = n.fma(FloatVector.broadcast(F, -LN2_HI), x);
        r = n.fma(FloatVector.broadcast(F, -LN2_LO), r);
        FloatVector p = r.fma(P0, P1);
        p = p.fma(r, FloatVector.broadcast(F, P2));
        p = p.fma(r, FloatVector.broadcast(F, P3));
        p = p.fma(r, FloatVector.broadcast(F, P4));
        p = p.fma(r, FloatVector.broadcast(F, P5));
        FloatVector y = p.fma(r.mul(r), r).add(1f);
        IntVector bits = ((IntVector) n.convert(VectorOperators.F2I, 0)).add(127).lanewise(VectorOperators.LSHL, 23);
        FloatVector result = y.mul(bits.reinterpretAsFloats());
        return result.blend(Float.POSITIVE_INFINITY, over).blend(0f, under);
    }

    /** Scalar twin of {@link #exp(FloatVector)}: the same operations in the same order. */
    static float exp(float x) {
        if (x > EXP_HI) {
            return Float.POSITIVE_INFINITY;
        }
        if (x < EXP_LO) {
            return 0f;
        }
        float t = x * LOG2E;
        float n = (t + ROUND) - ROUND;
        float r = Math.fma(n, -LN2_HI, x);
        r = Math.fma(n, -LN2_LO, r);
        float p = Math.fma(r, P0, P1);
        p = Math.fma(p, r, P2);
        p = Math.fma(p, r, P3);
        p = Math.fma(p, r, P4);
        p = Math.fma(p, r, P5);
        float y = Math.fma(p, r * r, r) + 1f;
        return y * Float.intBitsToFloat(((int) n + 127) << 23);
    }
}
