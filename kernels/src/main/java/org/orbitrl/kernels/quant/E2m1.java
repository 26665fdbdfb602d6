package org.orbitrl.kernels.quant;

/**
 * FP4 E2M1 (OCP MX spec): 1 sign bit (bit 3), 2 exponent bits (bias 1), 1 mantissa bit; no
 * infinities or NaN. The 16 codes decode to {@code ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}}. Shared by
 * {@link Mxfp4} and {@link Nvfp4}.
 */
final class E2m1 {
    private E2m1() {
    }

    /** Value of each code, indexed by the raw 4-bit code ({@code sign << 3 | exponent << 1 | mantissa}). */
    static final float[] VALUES = {
            0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f,
            -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f};

    /** Largest magnitude. */
    static final float MAX = 6f;

    static {
        // The literal table must equal the bit-level definition.
        for (int code = 0; code < 16; code++) {
            int e = (code >> 1) & 3;
            int m = code & 1;
            double mag = e == 0 ? m * 0.5 : Math.scalb(1.0 + m / 2.0, e - 1);
            double v = (code & 8) != 0 ? -mag : mag;
            if (Double.doubleToRawLongBits(v) != Double.doubleToRawLongBits(VALUES[code])) {
                throw new IllegalStateException("E2M1 table entry " + code + " is " + VALUES[code] + ", expected " + v);
            }
        }
    }

    /**
     * The code nearest to {@code v}, ties to the even code (the rounding of compressed-tensors'
     * {@code cast_to_fp4}: 0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4); magnitudes above 6
     * saturate to 6. The sign bit is copied from {@code v} (so a value rounding to zero keeps its sign).
     */
    static int encode(float v) {
        float a = Math.abs(v);
        int mag;
        if (a <= 0.25f) {
            mag = 0;
        } else if (a < 0.75f) {
            mag = 1;
        } else if (a <= 1.25f) {
            mag = 2;
        } else if (a < 1.75f) {
            mag = 3;
        } else if (a <= 2.5f) {
            mag = 4;
        } else if (a < 3.5f) {
            mag = 5;
        } else if (a <= 5f) {
            mag = 6;
        } else {
            mag = 7;
        }
        return (Float.floatToRawIntBits(v) >>> 28 & 8) | mag;
    }

    /**
     * Half the distance to the neighbouring grid points around a magnitude {@code a} (in units of
     * the scale): the largest error round-to-nearest can make there. Above 6 (saturation) it is
     * the distance to 6.
     */
    static float maxRoundingError(float a) {
        if (a <= 2f) {
            return 0.25f;
        }
        if (a <= 4f) {
            return 0.5f;
        }
        return Math.max(1f, a - MAX);
    }
}
