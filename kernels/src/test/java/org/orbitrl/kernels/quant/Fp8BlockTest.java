package org.orbitrl.kernels.quant;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class Fp8BlockTest {

    private static final int ROWS = 130; // two row blocks, the second partial
    private static final int COLS = 200; // two column blocks, the second partial

    /** Codes with known values: 0x38 = 1.0, 0x7E = 448, 0x01 = 2^-9 (subnormal), 0xC4 = -3.0. */
    private static Tensor codes() {
        Tensor t = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F8E4M3, ROWS, COLS);
        int[] pattern = {0x38, 0x7E, 0x01, 0xC4};
        for (int r = 0; r < ROWS; r++) {
            for (int c = 0; c < COLS; c++) {
                t.segment().set(java.lang.foreign.ValueLayout.JAVA_BYTE, (long) r * COLS + c, (byte) pattern[(r + c) % 4]);
            }
        }
        return t;
    }

    private static float expected(int r, int c, float[][] blockScale) {
        float[] values = {1f, 448f, 0x1p-9f, -3f};
        return values[(r + c) % 4] * blockScale[r / 128][c / 128];
    }

    @Test
    void f32ScalesMultiplyTheirBlocks() {
        float[][] s = {{0.125f, 2f}, {0.5f, 1e-3f}};
        Tensor scales = Tensor.of(new float[]{s[0][0], s[0][1], s[1][0], s[1][1]}, 2, 2);
        QuantizedTensor w = new QuantizedTensor(Fp8Block128.INSTANCE, ROWS, COLS, codes(), scales);
        float[] want = new float[ROWS * COLS];
        for (int i = 0; i < want.length; i++) {
            want[i] = expected(i / COLS, i % COLS, s);
        }
        Mismatches.bitwise("fp8-block128 closed form", want, QuantTesting.dequantize(w));
    }

    @Test
    void e8m0ScalesArePowersOfTwo() {
        // Bytes 124, 130, 127, 117: 2^-3, 2^3, 1, 2^-10.
        float[][] s = {{0.125f, 8f}, {1f, 0x1p-10f}};
        Tensor scales = Mxfp4Test.bytes(new int[]{124, 130, 127, 117}, 2, 2);
        QuantizedTensor w = new QuantizedTensor(Fp8Block128Ue8m0.INSTANCE, ROWS, COLS, codes(), scales);
        float[] want = new float[ROWS * COLS];
        for (int i = 0; i < want.length; i++) {
            want[i] = expected(i / COLS, i % COLS, s);
        }
        Mismatches.bitwise("fp8-block128-ue8m0 closed form", want, QuantTesting.dequantize(w));
    }

    @Test
    void roundTripErrorIsAtMostHalfAnE4m3Step() {
        for (Fp8BlockFormat f : new Fp8BlockFormat[]{Fp8Block128.INSTANCE, Fp8Block128Ue8m0.INSTANCE}) {
            Tensor x = QuantTesting.gaussian(51, ROWS, COLS);
            QuantizedTensor w = f.quantize(x);
            float[] xs = x.toFloatArray();
            float[] back = QuantTesting.dequantize(w);
            float[] bound = new float[xs.length];
            for (int i = 0; i < xs.length; i++) {
                float s = f.scale(w, i / COLS / 128, (i % COLS) / 128);
                float v = Math.abs(xs[i]) / s;
                assertTrue(v <= 448f * (1 + 1e-6f), f.name() + ": |x/scale| = " + v + " at " + i);
                // Half an E4M3 step: 2^-4 relative for normals (>= 2^-6), 2^-10 absolute below.
                bound[i] = s * Math.max(v * 0x1p-4f, 0x1p-10f) * (1 + 1e-6f);
            }
            Mismatches.within(f.name() + " |x - dq(q(x))| <= half an E4M3 step", xs, back, bound);
        }
    }

    @Test
    void ue8m0ScaleIsTheSmallestPowerOfTwoAboveAmaxOver448() {
        Tensor x = QuantTesting.gaussian(52, ROWS, COLS);
        QuantizedTensor w = Fp8Block128Ue8m0.INSTANCE.quantize(x);
        float[] xs = x.toFloatArray();
        for (int rb = 0; rb < 2; rb++) {
            for (int cb = 0; cb < 2; cb++) {
                float amax = 0;
                for (int r = rb * 128; r < Math.min(ROWS, rb * 128 + 128); r++) {
                    for (int c = cb * 128; c < Math.min(COLS, cb * 128 + 128); c++) {
                        amax = Math.max(amax, Math.abs(xs[r * COLS + c]));
                    }
                }
                float s = Fp8Block128Ue8m0.INSTANCE.scale(w, rb, cb);
                assertTrue(s >= amax / 448f && s / 2 < amax / 448f, "block " + rb + "," + cb + ": scale " + s
                        + " for amax/448 " + amax / 448f);
            }
        }
    }

    @Test
    void valuesOnTheGridRoundTripExactly() {
        // Every block holds +-448 * 2^k, so both scale rules give 2^k; values are E4M3 codes times 2^k.
        SplittableRandom rnd = new SplittableRandom(9);
        float[][] blockScale = new float[2][2];
        for (float[] row : blockScale) {
            for (int j = 0; j < 2; j++) {
                row[j] = Math.scalb(1f, rnd.nextInt(-12, 6));
            }
        }
        float[] v = new float[ROWS * COLS];
        for (int r = 0; r < ROWS; r++) {
            for (int c = 0; c < COLS; c++) {
                int code = rnd.nextInt(256);
                if (code == 0x7F || code == 0xFF) {
                    code = 0x7E;
                }
                v[r * COLS + c] = Numerics.e4m3ToFloat((byte) code) * blockScale[r / 128][c / 128];
            }
        }
        for (int rb = 0; rb < 2; rb++) {
            for (int cb = 0; cb < 2; cb++) {
                v[(rb * 128) * COLS + cb * 128] = -448f * blockScale[rb][cb];
            }
        }
        for (Fp8BlockFormat f : new Fp8BlockFormat[]{Fp8Block128.INSTANCE, Fp8Block128Ue8m0.INSTANCE}) {
            QuantizedTensor w = f.quantize(Tensor.of(v, ROWS, COLS));
            Mismatches.bitwise(f.name() + " on-grid round trip", v, QuantTesting.dequantize(w));
        }
    }

    @Test
    void f32PowerOfTwoScalesConvertToE8m0() {
        Tensor bytes = Fp8Block128Ue8m0.scalesFromF32(Tensor.of(new float[]{0.125f, 1f, 0x1p-20f, 64f}, 2, 2));
        assertEquals(java.util.List.of(124L, 127L, 107L, 133L), java.util.Arrays.stream(bytes.toLongArray()).boxed().toList());
        var notPow2 = assertThrows(IllegalArgumentException.class,
                () -> Fp8Block128Ue8m0.scalesFromF32(Tensor.of(new float[]{0.125f, 0.3f}, 1, 2)));
        assertTrue(notPow2.getMessage().contains("weight_scale_inv[0, 1]"), notPow2.getMessage());
    }

    @Test
    void storageAndBadInputs() {
        QuantizedTensor w = Fp8Block128.INSTANCE.quantize(QuantTesting.gaussian(53, ROWS, COLS));
        assertEquals(Fp8Block128.INSTANCE.storageBytes(ROWS, COLS), w.byteSize());
        var wrong = assertThrows(IllegalArgumentException.class,
                () -> new QuantizedTensor(Fp8Block128.INSTANCE, ROWS, COLS, codes(), Tensor.of(new float[2], 1, 2)));
        assertTrue(wrong.getMessage().contains("weight_scale_inv") && wrong.getMessage().contains("F32[2, 2]"),
                wrong.getMessage());
        var wrongV4 = assertThrows(IllegalArgumentException.class, () -> new QuantizedTensor(Fp8Block128Ue8m0.INSTANCE,
                ROWS, COLS, codes(), Tensor.of(new float[4], 2, 2)));
        assertTrue(wrongV4.getMessage().contains("U8[2, 2]"), wrongV4.getMessage());
    }
}
