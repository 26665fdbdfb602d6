package org.orbitrl.kernels.quant.internal;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorSpecies;

/**
 * The one reduction order of the quantized matmul. K is cut into units of 16 values; value
 * {@code p} of unit {@code u} goes to partial sum {@code lane(k) = 16·(u mod 2) + pos(p)} with
 * {@code pos(p) = 2·(p mod 8) + p/8} (the order in which one 64-bit load of 16 nibbles decodes:
 * 0, 8, 1, 9, …, 7, 15). Each of the 32 partial sums is a fused multiply-add chain in increasing
 * k; then a fixed tree {@code acc[l] += acc[l+16]}, {@code +8}, {@code +4}, {@code +2}, {@code +1}.
 * The order depends on K only; 512-bit (one vector per 16 lanes) and 256-bit (two) hardware
 * compute the same bits. Two chains per row keep the FMA latency off the critical path.
 *
 * <p>The kernels read x in the same permuted order: {@link #permuteX} reorders each unit of each
 * row once per call.
 */
public final class CanonicalDot {
    private CanonicalDot() {
    }

    /** Partial sums of the reduction. */
    public static final int LANES = 32;
    /** Values per unit (one 64-bit word of nibbles). */
    public static final int UNIT = 16;

    /** The vector species the kernels use: 512-bit where the hardware prefers it, else 256-bit. */
    static final VectorSpecies<Float> FS = FloatVector.SPECIES_PREFERRED.vectorBitSize() >= 512
            ? FloatVector.SPECIES_512 : FloatVector.SPECIES_256;
    /** Vector lanes: 16 (one vector per unit) or 8 (two). */
    static final int L = FS.length();

    /** Whether the hardware runs 256-bit vectors natively; if not, callers use the scalar path (same bits). */
    public static boolean vectorsAvailable() {
        return FloatVector.SPECIES_PREFERRED.vectorBitSize() >= 256;
    }

    /** Position of value {@code p} (0..15) of a unit in the decoded order. */
    public static int pos(int p) {
        return 2 * (p % 8) + p / 8;
    }

    /** Partial sum that value {@code k} of a row goes to. */
    public static int lane(int k) {
        return UNIT * ((k / UNIT) % 2) + pos(k % UNIT);
    }

    /** Sums the 32 partial sums in {@code acc} in the fixed tree order; overwrites {@code acc}. */
    public static float tree(float[] acc) {
        for (int h = LANES / 2; h >= 1; h >>= 1) {
            for (int l = 0; l < h; l++) {
                acc[l] += acc[l + h];
            }
        }
        return acc[0];
    }

    /**
     * x [m, k] reordered unit by unit into the decoded order: {@code out[i·k + 16u + pos(p)] =
     * x[i, 16u + p]}. A trailing partial unit ({@code k mod 16} values) keeps its natural order.
     */
    public static float[] permuteX(java.lang.foreign.MemorySegment x, long xOff, int m, int k) {
        java.lang.foreign.ValueLayout.OfFloat f32 = java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED
                .withOrder(java.nio.ByteOrder.LITTLE_ENDIAN);
        float[] out = new float[m * k];
        java.lang.foreign.MemorySegment.copy(x, f32, xOff, out, 0, m * k);
        float[] unit = new float[UNIT];
        int full = k / UNIT * UNIT;
        for (int i = 0; i < m; i++) {
            for (int u = i * k; u < i * k + full; u += UNIT) {
                System.arraycopy(out, u, unit, 0, UNIT);
                for (int p = 0; p < UNIT; p++) {
                    out[u + pos(p)] = unit[p];
                }
            }
        }
        return out;
    }

    /**
     * {@code Σ_k x[k]·w[k]} in the canonical order for a weight row {@code w} in natural order and
     * an x row already {@linkplain #permuteX permuted} at {@code xp[xOff..]}; {@code wp} is scratch
     * of k floats for the permuted weight row, {@code scratch} 32 floats.
     */
    public static float dot(float[] w, float[] wp, float[] xp, int xOff, int k, float[] scratch) {
        int full = k / UNIT * UNIT;
        for (int u = 0; u < full; u += UNIT) {
            for (int p = 0; p < UNIT; p++) {
                wp[u + pos(p)] = w[u + p];
            }
        }
        java.util.Arrays.fill(scratch, 0f);
        if (vectorsAvailable()) {
            FloatVector e0 = FloatVector.zero(FS);
            FloatVector e1 = e0;
            FloatVector o0 = e0;
            FloatVector o1 = e0;
            int u = 0;
            for (; u + 2 * UNIT <= full; u += 2 * UNIT) {
                e0 = FloatVector.fromArray(FS, wp, u).fma(FloatVector.fromArray(FS, xp, xOff + u), e0);
                o0 = FloatVector.fromArray(FS, wp, u + UNIT).fma(FloatVector.fromArray(FS, xp, xOff + u + UNIT), o0);
                if (L == 8) {
                    e1 = FloatVector.fromArray(FS, wp, u + 8).fma(FloatVector.fromArray(FS, xp, xOff + u + 8), e1);
                    o1 = FloatVector.fromArray(FS, wp, u + UNIT + 8).fma(FloatVector.fromArray(FS, xp, xOff + u + UNIT + 8), o1);
                }
            }
            if (u < full) { // one more even unit
                e0 = FloatVector.fromArray(FS, wp, u).fma(FloatVector.fromArray(FS, xp, xOff + u), e0);
                if (L == 8) {
                    e1 = FloatVector.fromArray(FS, wp, u + 8).fma(FloatVector.fromArray(FS, xp, xOff + u + 8), e1);
                }
            }
            if (L == 16) {
                e0.intoArray(scratch, 0);
                o0.intoArray(scratch, 16);
            } else {
                e0.intoArray(scratch, 0);
                e1.intoArray(scratch, 8);
                o0.intoArray(scratch, 16);
                o1.intoArray(scratch, 24);
            }
        } else {
            for (int q = 0; q < full; q++) {
                int l = UNIT * ((q / UNIT) % 2) + q % UNIT; // permuted position q within its unit
                scratch[l] = Math.fma(xp[xOff + q], wp[q], scratch[l]);
            }
        }
        for (int q = full; q < k; q++) {
            int l = lane(q);
            scratch[l] = Math.fma(xp[xOff + q], w[q], scratch[l]);
        }
        return tree(scratch);
    }
}
