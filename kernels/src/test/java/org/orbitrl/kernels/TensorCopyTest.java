package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * {@link Tensor#copyFrom} between views, against element-by-element reads of the source ({@link Tensor#getFloat}):
 * a head group of [N, groups, in] (rows contiguous, strided between them) into a contiguous [N, in] and back into
 * another group's columns, the same for bf16, a transposed source (the element path), a rank-1 slice, and an empty
 * view. Seeded random values; every destination element is checked, the untouched ones too.
 */
class TensorCopyTest {
    private static Tensor random(SplittableRandom r, DType dtype, long... shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        float[] v = new float[(int) n];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        Tensor t = Tensor.of(v, shape);
        return dtype == DType.F32 ? t : t.to(dtype);
    }

    @Test
    void aGroupOfColumnsCopiesOutAndBackIn() {
        for (DType dtype : new DType[]{DType.F32, DType.BF16}) {
            SplittableRandom r = new SplittableRandom(61);
            int n = 7;
            int groups = 3;
            int in = 5;
            Tensor x = random(r, dtype, n, groups, in);
            Tensor g = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), dtype, n, in).fill(Float.NaN);
            g.copyFrom(x.select(1, 1));
            for (int t = 0; t < n; t++) {
                for (int i = 0; i < in; i++) {
                    assertEquals(x.getFloat(t, 1, i), g.getFloat(t, i), dtype + " out [" + t + ", " + i + "]");
                }
            }
            Tensor y = random(r, dtype, n, groups, in);
            Tensor before = y.contiguous();
            y.select(1, 2).copyFrom(g);
            for (int t = 0; t < n; t++) {
                for (int gi = 0; gi < groups; gi++) {
                    for (int i = 0; i < in; i++) {
                        float want = gi == 2 ? x.getFloat(t, 1, i) : before.getFloat(t, gi, i);
                        assertEquals(want, y.getFloat(t, gi, i), dtype + " back in [" + t + ", " + gi + ", " + i + "]");
                    }
                }
            }
        }
    }

    @Test
    void transposedAndRankOneAndEmptyViews() {
        SplittableRandom r = new SplittableRandom(62);
        Tensor a = random(r, DType.F32, 4, 6);
        Tensor t = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, 6, 4);
        t.copyFrom(a.transpose(0, 1));
        for (int i = 0; i < 6; i++) {
            for (int j = 0; j < 4; j++) {
                assertEquals(a.getFloat(j, i), t.getFloat(i, j), "transposed [" + i + ", " + j + "]");
            }
        }
        Tensor row = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, 6);
        row.copyFrom(a.select(0, 2));
        for (int i = 0; i < 6; i++) {
            assertEquals(a.getFloat(2, i), row.getFloat(i), "row [" + i + "]");
        }
        Tensor empty = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, 0, 6);
        empty.copyFrom(a.slice(0, 1, 1));
        assertEquals(0, empty.numel());
        assertThrows(IllegalArgumentException.class, () -> row.copyFrom(a.select(1, 0)), "shapes differ");
    }
}
