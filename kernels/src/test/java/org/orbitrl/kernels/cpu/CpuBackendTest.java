package org.orbitrl.kernels.cpu;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.HostOps;
import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.orbitrl.kernels.cpu.TestData.assertClose;
import static org.orbitrl.kernels.cpu.TestData.copy;
import static org.orbitrl.kernels.cpu.TestData.random;
import static org.orbitrl.kernels.cpu.TestData.randomF32;

/**
 * {@link CpuBackend} against {@link ScalarBackend}, op by op, on seeded random data over many
 * shapes, most of them not multiples of the vector width. Tolerances are stated per op as
 * {@code atol + rtol·|ref|}; ops that perform the same IEEE operations as the reference in the
 * same order are required to match exactly.
 */
class CpuBackendTest {
    /** Sizes around and between vector widths (4, 8, 16 lanes). */
    private static final int[] ODD = {1, 3, 7, 16, 17, 33, 65, 130};

    private static CpuBackend cpu;
    private static final ScalarBackend REF = new ScalarBackend();

    @BeforeAll
    static void start() {
        cpu = new CpuBackend(3); // more threads than this machine may have cores: splits must not matter
    }

    @AfterAll
    static void stop() {
        cpu.close();
    }

    private static Tensor zeros(long... shape) {
        return Tensor.allocate(Arena.ofAuto(), DType.F32, shape);
    }

    // ------------------------------------------------------------------ linear algebra

    @Test
    void matmulMatchesScalarForF32AndBf16Weights() {
        SplittableRandom rnd = new SplittableRandom(1);
        int cases = 0;
        for (DType wt : new DType[]{DType.F32, DType.BF16}) {
            for (int m : new int[]{1, 3, 8, 17, 33}) {
                for (int k : ODD) {
                    for (int n : new int[]{1, 3, 5, 17, 33}) {
                        checkMatmul(rnd, wt, m, k, n);
                        cases++;
                    }
                }
            }
            checkMatmul(rnd, wt, 70, 257, 130); // several prefill tiles, K with a tail
            cases++;
        }
        assertEquals(2 * (5 * ODD.length * 5 + 1), cases);
    }

    private static void checkMatmul(SplittableRandom rnd, DType wt, int m, int k, int n) {
        Tensor x = randomF32(rnd, m, k);
        Tensor w = random(rnd, wt, 1f, n, k);
        Tensor yRef = zeros(m, n);
        Tensor y = zeros(m, n);
        REF.matmul(x, w, yRef);
        cpu.matmul(x, w, y);
        // float sums of K products of magnitude <= 1: error grows like sqrt(K)
        double atol = 1e-5 * Math.sqrt(k);
        assertClose("matmul " + wt + " M=" + m + " K=" + k + " N=" + n, yRef.toFloatArray(), y.toFloatArray(), atol, 1e-5);
    }

    @Test
    void matmulAcceptsBatchedLeadingDimensions() {
        SplittableRandom rnd = new SplittableRandom(2);
        Tensor x = randomF32(rnd, 2, 3, 33);
        Tensor w = random(rnd, DType.BF16, 1f, 17, 33);
        Tensor yRef = zeros(2, 3, 17);
        Tensor y = zeros(2, 3, 17);
        REF.matmul(x, w, yRef);
        cpu.matmul(x, w, y);
        assertClose("matmul [2,3,33]", yRef.toFloatArray(), y.toFloatArray(), 1e-5 * Math.sqrt(33), 1e-5);
    }

    @Test
    void matmulQuantizedMatchesScalar() {
        SplittableRandom rnd = new SplittableRandom(3);
        for (var format : org.orbitrl.kernels.quant.QuantFormats.all())
        for (int m : new int[]{1, 5, 33}) {
            for (int k : new int[]{32, 96, 256}) {
                for (int n : new int[]{1, 17, 70}) {
                    Tensor x = randomF32(rnd, m, k);
                    QuantizedTensor w = format.quantize(randomF32(rnd, n, k));
                    Tensor yRef = zeros(m, n);
                    Tensor y = zeros(m, n);
                    REF.matmulQuantized(x, w, yRef);
                    cpu.matmulQuantized(x, w, y);
                    assertClose(format.name() + " matmulQuantized M=" + m + " K=" + k + " N=" + n, yRef.toFloatArray(), y.toFloatArray(),
                            1e-5 * Math.sqrt(k), 1e-5);
                }
            }
        }
    }

    @Test
    void matmulTransposedMatchesTheHostReference() {
        SplittableRandom rnd = new SplittableRandom(12);
        for (DType wt : new DType[]{DType.F32, DType.BF16}) {
            for (int m : new int[]{1, 3, 8, 33}) {
                for (int n : new int[]{1, 7, 33}) {
                    for (int k : new int[]{1, 7, 17, 64, 130, 300}) {
                        Tensor dy = randomF32(rnd, m, n);
                        Tensor w = random(rnd, wt, 1f, n, k);
                        Tensor ref = zeros(m, k);
                        Tensor got = zeros(m, k);
                        HostOps.matmulTransposed(dy, w, ref);
                        cpu.matmulTransposed(dy, w, got);
                        // same ascending order over N; FMA instead of a rounded product
                        assertClose("matmulTransposed " + wt + " M=" + m + " N=" + n + " K=" + k, ref.toFloatArray(),
                                got.toFloatArray(), 1e-6 * Math.sqrt(n), 1e-5);
                    }
                }
            }
        }
        for (var format : org.orbitrl.kernels.quant.QuantFormats.all())
        for (int m : new int[]{1, 20}) {
            Tensor dy = randomF32(rnd, m, 45);
            QuantizedTensor w = format.quantize(randomF32(rnd, 45, 160));
            Tensor ref = zeros(m, 160);
            Tensor got = zeros(m, 160);
            HostOps.matmulQuantizedTransposed(dy, w, ref);
            cpu.matmulQuantizedTransposed(dy, w, got);
            assertClose(format.name() + " matmulQuantizedTransposed M=" + m, ref.toFloatArray(), got.toFloatArray(),
                    1e-6 * Math.sqrt(45), 1e-5);
        }
    }

    @Test
    void dequantizeMatchesScalarExactly() {
        SplittableRandom rnd = new SplittableRandom(4);
        for (DType out : new DType[]{DType.F32, DType.BF16}) {
            for (var format : org.orbitrl.kernels.quant.QuantFormats.all())
            for (int[] s : new int[][]{{1, 32}, {17, 96}, {130, 256}}) {
                QuantizedTensor w = format.quantize(randomF32(rnd, s[0], s[1]));
                Tensor ref = Tensor.allocate(Arena.ofAuto(), out, s[0], s[1]);
                Tensor got = Tensor.allocate(Arena.ofAuto(), out, s[0], s[1]);
                REF.dequantize(w, ref);
                cpu.dequantize(w, got);
                assertClose("dequantize to " + out + " " + s[0] + "x" + s[1], ref.toFloatArray(), got.toFloatArray(), 0, 0);
            }
        }
    }

    // ------------------------------------------------------------------ normalisation, activations

    @Test
    void rmsNormMatchesScalar() {
        SplittableRandom rnd = new SplittableRandom(5);
        for (DType wt : new DType[]{DType.F32, DType.BF16}) {
            for (int rows : new int[]{1, 3, 17}) {
                for (int h : new int[]{1, 3, 7, 17, 33, 65, 130, 1000}) {
                    Tensor x = random(rnd, DType.F32, 3f, rows, h);
                    Tensor w = random(rnd, wt, 2f, h);
                    Tensor ref = zeros(rows, h);
                    Tensor got = zeros(rows, h);
                    REF.rmsNorm(x, w, 1e-6f, ref);
                    cpu.rmsNorm(x, w, 1e-6f, got);
                    // the sum of squares is reduced in another order: relative error ~ 1e-7·sqrt(H)
                    assertClose("rmsNorm " + wt + " " + rows + "x" + h, ref.toFloatArray(), got.toFloatArray(), 1e-6, 1e-5);
                    cpu.rmsNorm(x, w, 1e-6f, x); // in place
                    assertClose("rmsNorm in place " + rows + "x" + h, ref.toFloatArray(), x.toFloatArray(), 1e-6, 1e-5);
                }
            }
        }
    }

    @Test
    void softmaxAndLogSoftmaxMatchScalar() {
        SplittableRandom rnd = new SplittableRandom(6);
        for (int rows : new int[]{1, 4, 19}) {
            for (int n : new int[]{1, 3, 7, 17, 33, 65, 130, 1000, 5003}) {
                Tensor x = random(rnd, DType.F32, 12f, rows, n);
                Tensor ref = copy(x);
                Tensor got = copy(x);
                REF.softmax(ref);
                cpu.softmax(got);
                // exp within 2 ulp and a differently ordered sum: 1e-5 relative
                assertClose("softmax " + rows + "x" + n, ref.toFloatArray(), got.toFloatArray(), 1e-9, 1e-5);
                Tensor lref = copy(x);
                Tensor lgot = copy(x);
                REF.logSoftmax(lref);
                cpu.logSoftmax(lgot);
                assertClose("logSoftmax " + rows + "x" + n, lref.toFloatArray(), lgot.toFloatArray(), 1e-5, 1e-6);
            }
        }
    }

    @Test
    void elementwiseOpsMatchScalar() {
        SplittableRandom rnd = new SplittableRandom(7);
        for (int n : new int[]{1, 3, 7, 17, 33, 65, 130, 40_003}) {
            Tensor a = random(rnd, DType.F32, 10f, n);
            Tensor b = random(rnd, DType.F32, 10f, n);
            Tensor ref = zeros(n);
            Tensor got = zeros(n);
            REF.add(a, b, ref);
            cpu.add(a, b, got);
            assertClose("add " + n, ref.toFloatArray(), got.toFloatArray(), 0, 0);
            REF.mul(a, b, ref);
            cpu.mul(a, b, got);
            assertClose("mul " + n, ref.toFloatArray(), got.toFloatArray(), 0, 0);
            REF.scale(a, -0.37f, ref);
            cpu.scale(a, -0.37f, got);
            assertClose("scale " + n, ref.toFloatArray(), got.toFloatArray(), 0, 0);
            // exp within 2 ulp of the reference's correctly rounded exp
            REF.silu(a, ref);
            cpu.silu(a, got);
            assertClose("silu " + n, ref.toFloatArray(), got.toFloatArray(), 1e-7, 1e-6);
            REF.swiglu(a, b, ref);
            cpu.swiglu(a, b, got);
            assertClose("swiglu " + n, ref.toFloatArray(), got.toFloatArray(), 1e-6, 1e-6);
            Tensor inPlace = copy(a);
            cpu.swiglu(inPlace, b, inPlace);
            assertClose("swiglu in place " + n, ref.toFloatArray(), inPlace.toFloatArray(), 1e-6, 1e-6);
        }
    }

    // ------------------------------------------------------------------ positions, attention

    @Test
    void ropeMatchesScalarExactlyOnStridedViews() {
        SplittableRandom rnd = new SplittableRandom(8);
        RopeScaling scaling = RopeScaling.defaults(10_000, 4096);
        int cases = 0;
        for (RopeTable.Style style : RopeTable.Style.values()) {
            for (int d : new int[]{8, 14, 34, 64, 130}) {
                for (int rd : new int[]{d, d / 2 - (d / 2) % 2}) { // full and partial rotary
                    RopeTable table = RopeTable.of(scaling, rd, 600, style);
                    for (int t : new int[]{1, 5, 17}) {
                        int h = 3;
                        // x is a view [T, H, D] of a fused [T, H + 2, D] buffer: leading strides are not H*D, D
                        Tensor fused = random(rnd, DType.F32, 2f, t, h + 2, d);
                        Tensor x = fused.slice(1, 1, 1 + h);
                        int[] pos = new int[t];
                        for (int i = 0; i < t; i++) {
                            pos[i] = rnd.nextInt(600);
                        }
                        Tensor positions = Tensor.ofInts(pos, t);
                        Tensor refFused = copy(fused);
                        REF.rope(refFused.slice(1, 1, 1 + h), positions, table);
                        cpu.rope(x, positions, table);
                        // the same products and sums as the reference, so the same bits; the
                        // untouched heads 0 and H+1 of the fused buffer must stay as they were
                        assertClose("rope " + style + " D=" + d + " rotary=" + rd + " T=" + t,
                                refFused.toFloatArray(), fused.toFloatArray(), 0, 0);
                        cases++;
                    }
                }
            }
        }
        assertEquals(2 * 5 * 2 * 3, cases);
    }

    @Test
    void attentionMatchesScalarWithGqaWindowsSinksAndStrides() {
        SplittableRandom rnd = new SplittableRandom(9);
        int[][] seq = {{1, 1, 0}, {5, 5, 0}, {3, 17, 14}, {17, 17, 0}, {2, 40, 20}}; // T, S, queryStart
        int[][] heads = {{2, 2}, {4, 2}, {6, 2}, {8, 1}};                           // Hq, Hkv
        int[][] dims = {{7, 5}, {16, 16}, {33, 20}};                                  // D, Dv
        int cases = 0;
        for (int[] s : seq) {
            for (int[] hh : heads) {
                for (int[] dd : dims) {
                    for (int window : new int[]{0, 3}) {
                        for (boolean sinks : new boolean[]{false, true}) {
                            checkAttention(rnd, s[0], s[1], s[2], hh[0], hh[1], dd[0], dd[1], window, sinks);
                            cases++;
                        }
                    }
                }
            }
        }
        assertEquals(seq.length * heads.length * dims.length * 4, cases);
    }

    private static void checkAttention(SplittableRandom rnd, int t, int s, int start, int hq, int hkv, int d, int dv,
                                       int window, boolean withSinks) {
        // q, k, v as views of fused projections: q [T, Hq, D] from a [T, Hq + 1, D] buffer, and so on
        Tensor q = random(rnd, DType.F32, 1.5f, t, hq + 1, d).slice(1, 1, 1 + hq);
        Tensor k = random(rnd, DType.F32, 1.5f, s, hkv + 2, d).slice(1, 2, 2 + hkv);
        Tensor v = random(rnd, DType.F32, 1f, s, hkv + 1, dv).slice(1, 0, hkv);
        Tensor sinks = withSinks ? random(rnd, DType.F32, 2f, hq) : null;
        AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), window, sinks);
        Tensor ref = zeros(t, hq, dv);
        Tensor got = zeros(t, hq, dv);
        REF.attention(q, k, v, ref, start, spec);
        cpu.attention(q, k, v, got, start, spec);
        assertClose("attention T=" + t + " S=" + s + " start=" + start + " Hq=" + hq + " Hkv=" + hkv + " D=" + d
                + " Dv=" + dv + " window=" + window + " sinks=" + withSinks, ref.toFloatArray(), got.toFloatArray(), 1e-6, 1e-5);
    }

    // ------------------------------------------------------------------ selection

    @Test
    void embeddingMatchesScalarExactly() {
        SplittableRandom rnd = new SplittableRandom(10);
        for (DType tt : new DType[]{DType.F32, DType.BF16}) {
            for (int h : new int[]{1, 7, 33, 130}) {
                Tensor table = random(rnd, tt, 1f, 50, h);
                int[] idv = {0, 49, 7, 7, 23};
                for (DType it : new DType[]{DType.I32, DType.I64}) {
                    Tensor ids = Tensor.ofInts(idv, 5).to(it);
                    Tensor ref = zeros(5, h);
                    Tensor got = zeros(5, h);
                    REF.embedding(table, ids, ref);
                    cpu.embedding(table, ids, got);
                    assertClose("embedding " + tt + " ids " + it + " H=" + h, ref.toFloatArray(), got.toFloatArray(), 0, 0);
                }
            }
        }
    }

    @Test
    void topkAndArgmaxMatchScalarWithTies() {
        SplittableRandom rnd = new SplittableRandom(11);
        for (int n : new int[]{1, 3, 7, 17, 33, 65, 130, 1000}) {
            int rows = 5;
            // few distinct values, so many ties
            float[] vals = new float[rows * n];
            for (int i = 0; i < vals.length; i++) {
                vals[i] = rnd.nextInt(9) - 4;
            }
            Tensor x = Tensor.of(vals, rows, n);
            for (int k : new int[]{1, Math.min(3, n), n}) {
                Tensor rv = zeros(rows, k);
                Tensor ri = Tensor.allocate(Arena.ofAuto(), DType.I32, rows, k);
                Tensor gv = zeros(rows, k);
                Tensor gi = Tensor.allocate(Arena.ofAuto(), DType.I32, rows, k);
                REF.topk(x, k, rv, ri);
                cpu.topk(x, k, gv, gi);
                assertClose("topk values n=" + n + " k=" + k, rv.toFloatArray(), gv.toFloatArray(), 0, 0);
                assertArrayEquals(ri.toLongArray(), gi.toLongArray(), "topk indices n=" + n + " k=" + k);
            }
            Tensor ra = Tensor.allocate(Arena.ofAuto(), DType.I32, rows);
            Tensor ga = Tensor.allocate(Arena.ofAuto(), DType.I32, rows);
            REF.argmax(x, ra);
            cpu.argmax(x, ga);
            assertArrayEquals(ra.toLongArray(), ga.toLongArray(), "argmax n=" + n);
        }
    }

    // ------------------------------------------------------------------ errors

    @Test
    void mismatchedShapesAreRejectedWithTheShapes() {
        Tensor x = zeros(2, 8);
        Tensor w = zeros(4, 9);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> cpu.matmul(x, w, zeros(2, 4)));
        assertTrue(e.getMessage().contains("[4, 9]") && e.getMessage().contains("[2, 8]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> cpu.add(x, zeros(2, 7), zeros(2, 8)));
        assertTrue(e.getMessage().contains("add") && e.getMessage().contains("[2, 7]"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> cpu.attention(zeros(2, 3, 8), zeros(2, 2, 8), zeros(2, 2, 8), zeros(2, 3, 8), 0, AttentionSpec.causal(8)));
        assertTrue(e.getMessage().contains("do not agree"), e.getMessage());
        assertThrows(IndexOutOfBoundsException.class,
                () -> cpu.embedding(zeros(4, 2), Tensor.ofInts(new int[]{4}, 1), zeros(1, 2)));
        RopeTable table = RopeTable.of(RopeScaling.defaults(10_000, 16), 8, 16, RopeTable.Style.HALF);
        assertThrows(IndexOutOfBoundsException.class,
                () -> cpu.rope(zeros(1, 1, 8), Tensor.ofInts(new int[]{16}, 1), table));
    }
}
