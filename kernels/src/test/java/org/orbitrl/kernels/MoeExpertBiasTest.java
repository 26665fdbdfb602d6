package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.cpu.ScalarBackend;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * {@link Backend#moeExpertBias} on the host: each grouped row gets the bias of the expert its pair chose, found here
 * from the ids and the grouping's order (not from the offsets the op reads), experts without rows included. One f32 add
 * a value: exact.
 */
class MoeExpertBiasTest {
    private final Backend b = new ScalarBackend();

    @Test
    void eachGroupedRowGetsItsExpertsBias() {
        SplittableRandom r = new SplittableRandom(41);
        int tokens = 13;
        int k = 3;
        int experts = 9;
        int n = 7;
        int[] ids = new int[tokens * k];
        for (int t = 0; t < tokens; t++) {
            for (int j = 0; j < k; j++) {
                int e;
                do {
                    e = 2 + r.nextInt(experts - 3);   // experts 0, 1 and 8 never chosen
                } while (chosen(ids, t, j, e));
                ids[t * k + j] = e;
            }
        }
        int p = tokens * k;
        Tensor off = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I32, experts + 1);
        Tensor order = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I32, p);
        Tensor position = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I32, p);
        b.moeGroup(Tensor.ofInts(ids, tokens, k), experts, off, order, position);
        float[] y0 = random(r, p * n);
        float[] bias = random(r, experts * n);
        Tensor ys = Tensor.of(y0.clone(), p, n);
        b.moeExpertBias(ys, Tensor.of(bias, experts, n), off);
        float[] got = ys.toFloatArray();
        long[] ord = order.toLongArray();
        for (int row = 0; row < p; row++) {
            int e = ids[(int) ord[row]];
            for (int c = 0; c < n; c++) {
                assertEquals(y0[row * n + c] + bias[e * n + c], got[row * n + c], 0f, "row " + row + " (expert " + e + ") column " + c);
            }
        }
    }

    @Test
    void eachPairRowGetsItsExpertsBias() {
        SplittableRandom r = new SplittableRandom(43);
        int p = 11;
        int experts = 6;
        int n = 5;
        int[] ids = new int[p];
        for (int i = 0; i < p; i++) {
            ids[i] = r.nextInt(experts);
        }
        float[] y0 = random(r, p * n);
        float[] bias = random(r, experts * n);
        Tensor ys = Tensor.of(y0.clone(), p, n);
        b.moeExpertBiasPairs(ys, Tensor.of(bias, experts, n), Tensor.ofInts(ids, p));
        float[] got = ys.toFloatArray();
        for (int row = 0; row < p; row++) {
            for (int c = 0; c < n; c++) {
                assertEquals(y0[row * n + c] + bias[ids[row] * n + c], got[row * n + c], 0f, "pair " + row + " column " + c);
            }
        }
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> b.moeExpertBiasPairs(ys, Tensor.of(bias, experts, n), Tensor.ofInts(new int[]{0, 7, 1, 1, 1, 1, 1, 1, 1, 1, 1}, p)));
        assertTrue(e.getMessage().contains("expert id 7"), e.getMessage());
    }

    @Test
    void offsetsThatDoNotCoverTheRowsAreRefusedByName() {
        Tensor ys = Tensor.of(new float[]{1, 2, 3, 4, 5, 6}, 3, 2);
        Tensor bias = Tensor.of(new float[]{1, 1, 2, 2}, 2, 2);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> b.moeExpertBias(ys, bias, Tensor.ofInts(new int[]{0, 2, 1}, 3)));
        assertTrue(e.getMessage().contains("moeExpertBias") && e.getMessage().contains("offsets"), e.getMessage());
        IllegalArgumentException shape = assertThrows(IllegalArgumentException.class,
                () -> b.moeExpertBias(ys, Tensor.of(new float[]{1, 1, 1, 2, 2, 2}, 2, 3), Tensor.ofInts(new int[]{0, 2, 3}, 3)));
        assertTrue(shape.getMessage().contains("bias"), shape.getMessage());
    }

    private static boolean chosen(int[] ids, int t, int j, int e) {
        for (int i = 0; i < j; i++) {
            if (ids[t * 3 + i] == e) {
                return true;
            }
        }
        return false;
    }

    private static float[] random(SplittableRandom r, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return v;
    }
}
