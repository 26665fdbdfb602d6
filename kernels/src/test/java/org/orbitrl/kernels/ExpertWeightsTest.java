package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link ExpertWeights#ofStack}, the inverse of {@link ExpertWeights#stacked}: a stacked quantized matrix [E·rows, cols]
 * split into its experts' views decodes, expert by expert, to the stack's own rows, and the views read as the same stack
 * again; a row count that does not divide the stack, or one the zero points' packing cannot split, is refused by name.
 */
class ExpertWeightsTest {

    @Test
    void theExpertsOfAStackDecodeToItsRowsAndStackAgain() {
        SplittableRandom r = new SplittableRandom(41);
        int experts = 5;
        int rows = 16;
        int cols = 64;
        float[] v = new float[experts * rows * cols];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        try (Backend cpu = Backends.cpu()) {
            for (String format : new String[]{"int4-g32", "int4-g32-asym", "mxfp4", "nvfp4"}) {
                QuantizedTensor stack = QuantFormats.byName(format).quantize(Tensor.of(v, experts * rows, cols));
                Tensor whole = Tensor.of(new float[v.length], experts * rows, cols);
                cpu.dequantize(stack, whole);
                float[] all = whole.toFloatArray();
                ExpertWeights w = ExpertWeights.ofStack(stack, rows);
                assertEquals(experts, w.experts(), format);
                for (int e = 0; e < experts; e++) {
                    Tensor one = Tensor.of(new float[rows * cols], rows, cols);
                    cpu.dequantize(w.quantized(e), one);
                    assertArrayEquals(Arrays.copyOfRange(all, e * rows * cols, (e + 1) * rows * cols), one.toFloatArray(), 0f,
                            format + ": expert " + e + " against the stack's rows");
                }
                QuantizedTensor again = w.stacked();
                assertNotNull(again, format + ": the views read as one stack");
                Tensor back = Tensor.of(new float[v.length], experts * rows, cols);
                cpu.dequantize(again, back);
                assertArrayEquals(all, back.toFloatArray(), 0f, format + ": the stack read back");
            }
        }
        QuantizedTensor sym = QuantFormats.byName("int4-g32").quantize(Tensor.of(v, experts * rows, cols));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ExpertWeights.ofStack(sym, 7));
        assertTrue(e.getMessage().contains("experts of 7 rows"), e.getMessage());
        QuantizedTensor asym = QuantFormats.byName("int4-g32-asym").quantize(Tensor.of(v, experts * rows, cols));
        e = assertThrows(IllegalArgumentException.class, () -> ExpertWeights.ofStack(asym, 4));
        assertTrue(e.getMessage().contains("divisible by 8"), e.getMessage());
    }
}
