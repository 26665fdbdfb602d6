package org.orbitrl.kernels;

/** Scalar conversions between float and the narrow float formats, bit-exact with PyTorch. */
public final class Numerics {
    private Numerics() {
    }

    private static final float[] E4M3 = new float[256];

    static {
        for (int b = 0; b < 256; b++) {
            int sign = (b >> 7) & 1;
            int exp = (b >> 3) & 0xF;
            int man = b & 7;
            float v;
            if (exp == 0xF && man == 7) {
                v = Float.NaN; // E4M3 "fn": no infinities, S.1111.111 is NaN
            } else if (exp == 0) {
                v = man / 8f * (float) Math.pow(2, -6);
            } else {
                v = (1 + man / 8f) * (float) Math.pow(2, exp - 7);
            }
            E4M3[b] = sign == 1 ? -v : v;
        }
    }

    /** bf16 bits (upper half of an f32) to float. */
    public static float bf16ToFloat(short bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    /** float to bf16 bits, round to nearest even (NaN stays NaN), as PyTorch's {@code .to(bfloat16)}. */
    public static short floatToBf16(float f) {
        int x = Float.floatToRawIntBits(f);
        if ((x & 0x7FFFFFFF) > 0x7F800000) {
            return (short) ((x >>> 16) | 0x40);
        }
        int lsb = (x >>> 16) & 1;
        return (short) ((x + 0x7FFF + lsb) >>> 16);
    }

    /** Rounds a float to the nearest bf16 value, returned as float. */
    public static float roundBf16(float f) {
        return bf16ToFloat(floatToBf16(f));
    }

    /** FP8 E4M3 (fn variant: bias 7, max 448, no infinities) byte to float. */
    public static float e4m3ToFloat(byte b) {
        return E4M3[b & 0xFF];
    }

    /** float to FP8 E4M3, round to nearest even, saturating to ±448 (as PyTorch's saturating cast). */
    public static byte floatToE4m3(float f) {
        if (Float.isNaN(f)) {
            return 0x7F;
        }
        int sign = f < 0 || (f == 0 && 1 / f < 0) ? 0x80 : 0;
        float a = Math.abs(f);
        if (a >= 448f) {
            return (byte) (sign | 0x7E);
        }
        // Find the nearest representable magnitude among the 127 finite positive codes (table is monotone).
        int lo = 0;
        int hi = 0x7E;
        while (lo < hi) {
            int mid = (lo + hi + 1) >>> 1;
            if (E4M3[mid] <= a) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        int code = lo;
        if (code < 0x7E) {
            float below = E4M3[code];
            float above = E4M3[code + 1];
            float dBelow = a - below;
            float dAbove = above - a;
            if (dAbove < dBelow || (dAbove == dBelow && (code & 1) == 1)) {
                code++;
            }
        }
        return (byte) (sign | code);
    }
}
