package org.orbitrl.kernels.cpu;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.BackwardOps;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.HostOps;
import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.orbitrl.kernels.cpu.TestData.assertBitwise;
import static org.orbitrl.kernels.cpu.TestData.assertClose;
import static org.orbitrl.kernels.cpu.TestData.copy;
import static org.orbitrl.kernels.cpu.TestData.random;
import static org.orbitrl.kernels.cpu.TestData.randomF32;

/**
 * The training-path operations of {@link CpuBackend} against the host references
 * ({@link BackwardOps}, {@link HostOps}) on seeded random data, with tolerances stated per op;
 * ops that do the reference's operations in its order must match it bit for bit. Sums over
 * tokens must not depend on the number of threads (checked bitwise against a one-thread backend).
 */
class TrainingOpsTest {
    private static CpuBackend cpu;
    private static CpuBackend single;

    @BeforeAll
    static void start() {
        cpu = new CpuBackend(3);
        single = new CpuBackend(1);
    }

    @AfterAll
    static void stop() {
        cpu.close();
        single.close();
    }

    private static Tensor zeros(long... shape) {
        return Tensor.allocate(Arena.ofAuto(), DType.F32, shape);
    }

    @Test
    void rmsNormBackwardMatchesTheReference() {
        SplittableRandom rnd = new SplittableRandom(41);
        for (DType wt : new DType[]{DType.F32, DType.BF16}) {
            for (int h : new int[]{1, 7, 33, 130, 1000}) {
                Tensor x = random(rnd, DType.F32, 2f, 5, h);
                Tensor w = random(rnd, wt, 1.5f, h);
                Tensor dy = randomF32(rnd, 5, h);
                Tensor ref = zeros(5, h);
                Tensor got = zeros(5, h);
                BackwardOps.rmsNormBackward(x, w, 1e-6f, dy, ref);
                cpu.rmsNormBackward(x, w, 1e-6f, dy, got);
                // two sums over H in another order: 1e-5 relative, 1e-6 absolute
                assertClose("rmsNormBackward " + wt + " H=" + h, ref.toFloatArray(), got.toFloatArray(), 1e-6, 1e-5);
                Tensor inPlace = copy(dy);
                cpu.rmsNormBackward(x, w, 1e-6f, inPlace, inPlace);
                assertBitwise("rmsNormBackward in place H=" + h, got.toFloatArray(), inPlace.toFloatArray());
            }
        }
    }

    @Test
    void swigluBackwardMatchesTheReference() {
        SplittableRandom rnd = new SplittableRandom(42);
        for (int n : new int[]{1, 7, 33, 40_001}) {
            Tensor g = random(rnd, DType.F32, 8f, n);
            Tensor u = randomF32(rnd, n);
            Tensor d = randomF32(rnd, n);
            Tensor rg = zeros(n);
            Tensor ru = zeros(n);
            Tensor cg = zeros(n);
            Tensor cu = zeros(n);
            BackwardOps.swigluBackward(g, u, d, rg, ru);
            cpu.swigluBackward(g, u, d, cg, cu);
            // the reference's sigmoid is in double; ours is a float exp within 2 ulp
            assertClose("swigluBackward dgate n=" + n, rg.toFloatArray(), cg.toFloatArray(), 1e-6, 1e-5);
            assertClose("swigluBackward dup n=" + n, ru.toFloatArray(), cu.toFloatArray(), 1e-6, 1e-5);
        }
    }

    @Test
    void ropeBackwardIsTheReferenceBitForBitAndUndoesRope() {
        SplittableRandom rnd = new SplittableRandom(43);
        for (RopeTable.Style style : RopeTable.Style.values()) {
            for (int[] dr : new int[][]{{64, 64}, {34, 16}, {130, 64}}) {
                RopeTable table = RopeTable.of(RopeScaling.defaults(10_000, 512), dr[1], 512, style);
                Tensor positions = Tensor.ofInts(new int[]{0, 5, 511, 77}, 4);
                Tensor x = random(rnd, DType.F32, 2f, 4, 3, dr[0]);
                Tensor ref = copy(x);
                Tensor got = copy(x);
                BackwardOps.ropeBackward(ref, positions, table);
                cpu.ropeBackward(got, positions, table);
                assertBitwise("ropeBackward " + style + " D=" + dr[0] + " rotary=" + dr[1], ref.toFloatArray(), got.toFloatArray());
                cpu.rope(got, positions, table); // rotating back returns x up to rounding
                assertClose("rope after ropeBackward " + style, x.toFloatArray(), got.toFloatArray(), 1e-6, 1e-6);
            }
        }
    }

    @Test
    void attentionBackwardMatchesTheReferenceAndIgnoresThreadCount() {
        SplittableRandom rnd = new SplittableRandom(44);
        int[][] seq = {{1, 1, 0}, {9, 9, 0}, {4, 13, 9}}; // T, S, queryStart
        int[][] heads = {{2, 2}, {6, 2}, {4, 1}};        // Hq, Hkv
        for (int[] s : seq) {
            for (int[] h : heads) {
                for (int window : new int[]{0, 4}) {
                    for (boolean sinks : new boolean[]{false, true}) {
                        int t = s[0];
                        int n = s[1];
                        int d = 17;
                        int dvd = 20;
                        Tensor q = random(rnd, DType.F32, 1.5f, t, h[0] + 1, d).slice(1, 1, 1 + h[0]);
                        Tensor k = random(rnd, DType.F32, 1.5f, n, h[1] + 1, d).slice(1, 0, h[1]);
                        Tensor v = randomF32(rnd, n, h[1], dvd);
                        Tensor dout = randomF32(rnd, t, h[0], dvd);
                        AttentionSpec spec = new AttentionSpec(0.3f, window, sinks ? randomF32(rnd, h[0]) : null);
                        Tensor[] ref = {zeros(t, h[0], d), zeros(n, h[1], d), zeros(n, h[1], dvd)};
                        Tensor[] got = {zeros(t, h[0], d), zeros(n, h[1], d), zeros(n, h[1], dvd)};
                        Tensor[] one = {zeros(t, h[0], d), zeros(n, h[1], d), zeros(n, h[1], dvd)};
                        BackwardOps.attentionBackward(q, k, v, dout, s[2], spec, ref[0], ref[1], ref[2]);
                        cpu.attentionBackward(q, k, v, dout, s[2], spec, got[0], got[1], got[2]);
                        single.attentionBackward(q, k, v, dout, s[2], spec, one[0], one[1], one[2]);
                        String what = "attentionBackward T=" + t + " S=" + n + " Hq=" + h[0] + " Hkv=" + h[1]
                                + " window=" + window + " sinks=" + sinks;
                        String[] names = {"dq", "dk", "dv"};
                        for (int g = 0; g < 3; g++) {
                            // sums over keys and queries: 1e-5 relative, 2e-6 absolute
                            assertClose(what + " " + names[g], ref[g].toFloatArray(), got[g].toFloatArray(), 2e-6, 1e-5);
                            assertBitwise(what + " " + names[g] + " with 1 vs 3 threads", one[g].toFloatArray(),
                                    got[g].toFloatArray());
                        }
                    }
                }
            }
        }
    }

    @Test
    void gatherScatterAxpyAndBiasAreTheReferenceBitForBit() {
        SplittableRandom rnd = new SplittableRandom(46);
        for (int h : new int[]{1, 7, 33, 300}) {
            Tensor src = randomF32(rnd, 9, h);
            Tensor rows = Tensor.ofInts(new int[]{3, 0, 3, 8, 3, 1}, 6);
            Tensor ref = zeros(6, h);
            Tensor got = zeros(6, h);
            HostOps.gatherRows(src, rows, ref);
            cpu.gatherRows(src, rows, got);
            assertBitwise("gatherRows H=" + h, ref.toFloatArray(), got.toFloatArray());

            Tensor part = randomF32(rnd, 6, h);
            Tensor weights = randomF32(rnd, 6);
            for (Tensor w : new Tensor[]{weights, null}) {
                Tensor dref = copy(src);
                Tensor dgot = copy(src);
                HostOps.scatterAddRows(part, rows, w, dref);
                cpu.scatterAddRows(part, rows, w, dgot);
                assertBitwise("scatterAddRows H=" + h + (w == null ? " unweighted" : ""), dref.toFloatArray(), dgot.toFloatArray());
            }

            Tensor y = randomF32(rnd, 9, h);
            Tensor yref = copy(y);
            HostOps.axpy(-1.25f, src, yref);
            cpu.axpy(-1.25f, src, y);
            assertBitwise("axpy H=" + h, yref.toFloatArray(), y.toFloatArray());

            Tensor bias = randomF32(rnd, h);
            Tensor bref = copy(y);
            HostOps.addBias(bref, bias);
            cpu.addBias(y, bias);
            assertBitwise("addBias H=" + h, bref.toFloatArray(), y.toFloatArray());
        }
    }
}
