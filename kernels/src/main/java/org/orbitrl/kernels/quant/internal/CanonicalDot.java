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
        return tree(acc, 0);
    }

    /** {@link #tree(float[])} over {@code acc[off, off + 32)}. */
    public static float tree(float[] acc, int off) {
        for (int h = LANES / 2; h >= 1; h >>= 1) {
            for (int l = off; l < off + h; l++) {
                acc[l] += acc[l + h];
            }
        }
        return acc[off];
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

    /** A weight row in natural order, {@code w[0, k)}, reordered unit by unit like {@link #permuteX} into {@code wp}. */
    public static void permuteRow(float[] w, float[] wp, int k) {
        int full = k / UNIT * UNIT;
        for (int u = 0; u < full; u += UNIT) {
            for (int p = 0; p < UNIT; p++) {
                wp[u + pos(p)] = w[u + p];
            }
        }
        System.arraycopy(w, full, wp, full, k - full);
    }

    /**
     * {@code Σ_k x[k]·w[k]} in the canonical order, for a weight row and an x row both
     * {@linkplain #permuteRow permuted}: {@code wp[0, k)} and {@code xp[xOff, xOff + k)};
     * {@code scratch} holds at least 32 floats.
     */
    public static float dot(float[] wp, float[] xp, int xOff, int k, float[] scratch) {
        int full = k / UNIT * UNIT;
        int units = full / UNIT;
        if (vectorsAvailable()) {
            for (int pos = 0; pos < UNIT; pos += L) { // with 8 lanes, positions 0..7 then 8..15
                FloatVector a = FloatVector.zero(FS); // chain of the current unit's parity
                FloatVector b = a;                    // the other chain
                for (int u = 0; u < units; u++) {
                    int o = UNIT * u + pos;
                    FloatVector n = FloatVector.fromArray(FS, wp, o).fma(FloatVector.fromArray(FS, xp, xOff + o), a);
                    a = b;
                    b = n;
                }
                if (units % 2 != 0) {
                    FloatVector t = a;
                    a = b;
                    b = t;
                }
                a.intoArray(scratch, pos);
                b.intoArray(scratch, UNIT + pos);
            }
        } else {
            java.util.Arrays.fill(scratch, 0, LANES, 0f);
            for (int q = 0; q < full; q++) {
                int l = UNIT * ((q / UNIT) % 2) + q % UNIT; // q is already at its position within the unit
                scratch[l] = Math.fma(xp[xOff + q], wp[q], scratch[l]);
            }
        }
        for (int q = full; q < k; q++) { // a trailing partial unit, in natural order
            int l = lane(q);
            scratch[l] = Math.fma(xp[xOff + q], wp[q], scratch[l]);
        }
        return tree(scratch);
    }
}
