package org.orbitrl.kernels.quant.internal;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * The one reduction order of the quantized matmul: 16 partial sums, {@code acc[l]} the fused
 * multiply-add chain over {@code k ≡ l (mod 16)} in increasing k, then a fixed tree
 * {@code acc[l] += acc[l+8]}, {@code += acc[l+4]}, {@code += acc[l+2]}, {@code += acc[l+1]}.
 * It depends on K only, and 256-bit (two vectors per 16 lanes) and 512-bit (one vector)
 * hardware compute the same bits.
 */
public final class CanonicalDot {
    private CanonicalDot() {
    }

    /** Logical lanes of the reduction. */
    public static final int LANES = 16;

    static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** The vector species the kernels use: 512-bit where the hardware prefers it, else 256-bit. */
    static final VectorSpecies<Float> FS = FloatVector.SPECIES_PREFERRED.vectorBitSize() >= 512
            ? FloatVector.SPECIES_512 : FloatVector.SPECIES_256;
    /** Vector lanes: 16 (one vector per logical 16) or 8 (two). */
    static final int L = FS.length();

    /** Whether the hardware runs 256-bit vectors natively; if not, callers use the scalar path (same bits). */
    public static boolean vectorsAvailable() {
        return FloatVector.SPECIES_PREFERRED.vectorBitSize() >= 256;
    }

    /** Sums the 16 partial sums in {@code acc} in the fixed tree order; overwrites {@code acc}. */
    public static float tree(float[] acc) {
        for (int h = LANES / 2; h >= 1; h >>= 1) {
            for (int l = 0; l < h; l++) {
                acc[l] += acc[l + h];
            }
        }
        return acc[0];
    }

    /** Lanes of one or two vectors as the 16 partial sums, then {@link #tree}. */
    static float reduce(FloatVector a0, FloatVector a1, float[] scratch16) {
        a0.intoArray(scratch16, 0);
        if (L == 8) {
            a1.intoArray(scratch16, 8);
        }
        return tree(scratch16);
    }

    /**
     * {@code Σ_k x[k]·w[k]} in the canonical order, x f32 at byte offset {@code xOff} of {@code x}.
     */
    public static float dot(float[] w, MemorySegment x, long xOff, int k, float[] scratch16) {
        int full = k / LANES * LANES;
        if (vectorsAvailable()) {
            FloatVector a0 = FloatVector.zero(FS);
            FloatVector a1 = FloatVector.zero(FS);
            for (int p = 0; p < full; p += LANES) {
                long xo = xOff + 4L * p;
                a0 = FloatVector.fromArray(FS, w, p).fma(FloatVector.fromMemorySegment(FS, x, xo, ByteOrder.LITTLE_ENDIAN), a0);
                if (L == 8) {
                    a1 = FloatVector.fromArray(FS, w, p + 8)
                            .fma(FloatVector.fromMemorySegment(FS, x, xo + 32, ByteOrder.LITTLE_ENDIAN), a1);
                }
            }
            a0.intoArray(scratch16, 0);
            if (L == 8) {
                a1.intoArray(scratch16, 8);
            }
        } else {
            java.util.Arrays.fill(scratch16, 0f);
            for (int p = 0; p < full; p++) {
                scratch16[p % LANES] = Math.fma(x.get(F32, xOff + 4L * p), w[p], scratch16[p % LANES]);
            }
        }
        for (int p = full; p < k; p++) {
            scratch16[p % LANES] = Math.fma(x.get(F32, xOff + 4L * p), w[p], scratch16[p % LANES]);
        }
        return tree(scratch16);
    }
}
