package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.ClampedSwiglu;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.LimitedSwiglu;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Strided device copies against the host copy of the same views (exact), rows and spans copied through a table into
 * places of one tensor and a tensor alone (exact, the rest left as it was), gpt-oss's clamped SwiGLU
 * forward and backward against {@link ClampedSwiglu} and DeepSeek V4's SwiGLU with its limit against
 * {@link LimitedSwiglu} (the device's expf may differ from the host's by a few ulps: 1e-6 + 1e-5·|ref|).
 * Inputs straddle the clamp limits.
 */
class CudaLayoutOpsTest extends CudaTestBase {

    @Test
    void stridedCopiesOfSlicesHeadsAndTransposesAreExact() {
        SplittableRandom r = rng(11);
        Tensor host = randn(r, 1f, 5, 3, 7);                                   // [T, H, D]
        Tensor src = dev(host);
        // a column slice, a selected head, a transpose, a 3-d slice of the last dimension
        check("column slice", host.reshape(15, 7).slice(1, 2, 6), src.reshape(15, 7).slice(1, 2, 6));
        check("selected head", host.select(1, 2), src.select(1, 2));
        check("transpose", host.select(1, 0).transpose(0, 1), src.select(1, 0).transpose(0, 1));
        check("3-d last-dimension slice", host.slice(2, 3, 7), src.slice(2, 3, 7));
        // a strided destination: write a [5, 3, 2] block into the middle of the last dimension
        Tensor block = randn(r, 1f, 5, 3, 2);
        Tensor dst = dev(host);
        gpu.copy(dev(block), dst.slice(2, 4, 6));
        Tensor expected = Tensor.of(host.toFloatArray(), 5, 3, 7);
        expected.slice(2, 4, 6).copyFrom(block);
        assertClose("strided destination", expected.toFloatArray(), gpu.toHost(dst).toFloatArray(), 0, 0);
        // i32 too
        Tensor ids = Tensor.ofInts(new int[]{1, 2, 3, 4, 5, 6}, 2, 3);
        Tensor out = poisoned(DType.I32, 3, 2);
        gpu.copy(dev(ids).transpose(0, 1), out);
        assertExact("i32 transpose", ids.transpose(0, 1).contiguous().toLongArray(), gpu.toHost(out).toLongArray());
    }

    @Test
    void copiesOfWholeSixteenByteUnitsAreExact() {
        SplittableRandom r = rng(16);
        Tensor host = randn(r, 1f, 32, 8, 64);                                  // [N, groups, in]: wo_a's regrouping
        Tensor src = dev(host);
        assertTrue(CudaLayoutOps.vectorUnits(src.transpose(0, 1), src.transpose(0, 1), new long[]{1, 8, 32, 64},
                new long[]{0, 64, 512, 1}, new long[]{0, 64, 512, 1}), "the regrouping moves 16-byte units");
        check("groups leading", host.transpose(0, 1), src.transpose(0, 1));
        check("a 16-byte aligned slice of the last dimension", host.slice(2, 4, 12), src.slice(2, 4, 12));
        check("an unaligned slice (4-byte moves)", host.slice(2, 2, 10), src.slice(2, 2, 10));
        check("a last dimension not of 4 (4-byte moves)", host.slice(2, 0, 7), src.slice(2, 0, 7));
        // into a strided destination: every group's rows back into their places
        Tensor grouped = randn(r, 1f, 8, 32, 64);
        Tensor dst = poisoned(DType.F32, 32, 8, 64);
        gpu.copy(dev(grouped), dst.transpose(0, 1));
        assertClose("into the transposed view", grouped.transpose(0, 1).contiguous().toFloatArray(),
                gpu.toHost(dst).toFloatArray(), 0, 0);
    }

    @Test
    void rowsCopiedThroughATableLandWhereTheirDestinationsAre() {
        SplittableRandom r = rng(14);
        for (int w : new int[]{512, 1024, 33, 7}) {          // 16-byte moves, and 4-byte ones for widths not of 4
            Tensor host = randn(r, 1f, 9, w);
            Tensor src = dev(host);
            int[] rows = {3, 0, 8, 3, 5};
            Tensor store = poisoned(DType.F32, 12, w);        // destinations at rows 1, 2, 7, 11 of one store, and one alone
            Tensor alone = poisoned(DType.F32, 1, w);
            Tensor[] dsts = {store.slice(0, 1, 2), store.slice(0, 2, 3), store.slice(0, 7, 8), store.slice(0, 11, 12), alone};
            gpu.copyRows(src, rows, dsts);
            float[] got = gpu.toHost(store).toFloatArray();
            int[] at = {1, 2, 7, 11};
            for (int i = 0; i < at.length; i++) {
                assertClose("w " + w + ": row " + rows[i] + " into row " + at[i],
                        host.slice(0, rows[i], rows[i] + 1).toFloatArray(),
                        java.util.Arrays.copyOfRange(got, at[i] * w, (at[i] + 1) * w), 0, 0);
            }
            assertTrue(Float.isNaN(got[0]) && Float.isNaN(got[3 * w]), "w " + w + ": rows not named are left alone");
            assertClose("w " + w + ": the lone destination", host.slice(0, 5, 6).toFloatArray(), gpu.toHost(alone).toFloatArray(), 0, 0);
        }
        Tensor src = dev(randn(r, 1f, 4, 16));
        assertThrows(IllegalArgumentException.class, () -> gpu.copyRows(src, new int[]{4}, new Tensor[]{poisoned(DType.F32, 1, 16)}),
                "a row past the source");
        assertThrows(IllegalArgumentException.class, () -> gpu.copyRows(src, new int[]{1}, new Tensor[]{poisoned(DType.F32, 1, 15)}),
                "a destination of another width");
    }

    @Test
    void spansCopiedThroughATableLandWhereTheirDestinationsAre() {
        SplittableRandom r = rng(15);
        Tensor a = randn(r, 1f, 3, 512);   // 16-byte moves
        Tensor b = randn(r, 1f, 5, 33);    // 4-byte moves (a count not of 4)
        Tensor c = randn(r, 1f, 1, 7);
        Tensor all = poisoned(DType.F32, 3 * 512 + 5 * 33 + 7 + 9);
        Tensor[] dsts = {all.slice(0, 0, 1536).reshape(3, 512), all.slice(0, 1536, 1701).reshape(5, 33),
                all.slice(0, 1701, 1708).reshape(1, 7)};
        gpu.copySpans(new Tensor[]{dev(a), dev(b), dev(c)}, dsts);
        float[] got = gpu.toHost(all).toFloatArray();
        assertClose("a 512-wide span", a.toFloatArray(), java.util.Arrays.copyOfRange(got, 0, 1536), 0, 0);
        assertClose("a 33-wide span", b.toFloatArray(), java.util.Arrays.copyOfRange(got, 1536, 1701), 0, 0);
        assertClose("a 7-wide span", c.toFloatArray(), java.util.Arrays.copyOfRange(got, 1701, 1708), 0, 0);
        assertTrue(Float.isNaN(got[1708]) && Float.isNaN(got[got.length - 1]), "the rest left alone");
        assertThrows(IllegalArgumentException.class, () -> gpu.copySpans(new Tensor[]{dev(a)},
                new Tensor[]{poisoned(DType.F32, 3, 511)}), "spans of different lengths");
    }

    private void check(String what, Tensor hostView, Tensor devView) {
        Tensor out = poisoned(DType.F32, hostView.shape());
        gpu.copy(devView, out);
        assertClose(what, hostView.contiguous().toFloatArray(), gpu.toHost(out).toFloatArray(), 0, 0);
    }

    @Test
    void clampedSwigluForwardAndBackwardMatchTheHostReference() {
        SplittableRandom r = rng(12);
        int rows = 37;
        int inter = 24;
        float alpha = 1.702f;
        float limit = 7f;
        Tensor gu = randn(r, 10f, rows, 2L * inter);                           // about 30% clamped
        Tensor dout = randn(r, 1f, rows, inter);
        Tensor out = poisoned(DType.F32, rows, inter);
        gpu.clampedSwiglu(dev(gu), alpha, limit, out);
        Tensor ref = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, rows, inter);
        ClampedSwiglu.forward(gu, alpha, limit, ref);
        assertClose("clampedSwiglu", ref.toFloatArray(), gpu.toHost(out).toFloatArray(), 1e-6, 1e-5);
        Tensor dgu = poisoned(DType.F32, rows, 2L * inter);
        gpu.clampedSwigluBackward(dev(gu), dev(dout), alpha, limit, dgu);
        Tensor dref = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, rows, 2L * inter);
        ClampedSwiglu.backward(gu, dout, alpha, limit, dref);
        assertClose("clampedSwigluBackward", dref.toFloatArray(), gpu.toHost(dgu).toFloatArray(), 1e-6, 1e-5);
    }

    @Test
    void limitedSwigluForwardAndBackwardMatchTheHostReference() {
        SplittableRandom r = rng(13);
        int rows = 41;
        int inter = 33;
        float limit = 10f;
        Tensor g = randn(r, 12f, rows, inter);                                 // about 40% of the gates clamped
        Tensor u = randn(r, 12f, rows, inter);
        Tensor dout = randn(r, 1f, rows, inter);
        Tensor out = poisoned(DType.F32, rows, inter);
        gpu.limitedSwiglu(dev(g), dev(u), limit, out);
        Tensor ref = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, rows, inter);
        LimitedSwiglu.forward(g, u, limit, ref);
        assertClose("limitedSwiglu", ref.toFloatArray(), gpu.toHost(out).toFloatArray(), 1e-6, 1e-5);
        Tensor dg = poisoned(DType.F32, rows, inter);
        Tensor du = poisoned(DType.F32, rows, inter);
        gpu.limitedSwigluBackward(dev(g), dev(u), dev(dout), limit, dg, du);
        Tensor dgRef = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, rows, inter);
        Tensor duRef = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, rows, inter);
        LimitedSwiglu.backward(g, u, dout, limit, dgRef, duRef);
        assertClose("limitedSwigluBackward dgate", dgRef.toFloatArray(), gpu.toHost(dg).toFloatArray(), 1e-6, 1e-5);
        assertClose("limitedSwigluBackward dup", duRef.toFloatArray(), gpu.toHost(du).toFloatArray(), 1e-6, 1e-5);
        org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> gpu.limitedSwiglu(dev(g), dev(dout.reshape(inter, rows)), limit, out), "shapes that differ");
    }
}
