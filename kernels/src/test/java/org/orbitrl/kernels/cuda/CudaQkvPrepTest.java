package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The fused decode attention preparation ({@code qkvPrep} from one fused projection, {@code pagedDecodePrep} from
 * q, k and v apart) against the scalar backend's rmsNorm and rope applied to the slices of the same projection, and
 * the caches against a plain row copy; the host backend's default {@code pagedDecodePrep} (those very steps) must
 * equal the reference bit for bit: f32, bf16 and no
 * head norms, HALF and INTERLEAVED rope, partial rotary dims, Dv ≠ D, a sequence whose slot is
 * negative (its cache rows untouched). Tolerance |err| ≤ 1e-6 + 1e-5·|ref| (f32, differently
 * ordered sums of squares); v rows and untouched rows exact.
 */
class CudaQkvPrepTest extends CudaTestBase {

    @Test
    void matchesNormRopeAndCacheWrite() {
        SplittableRandom r = rng(101);
        int b = 3;
        int hq = 4;
        int hkv = 2;
        int d = 64;
        int dv = 48;
        int rows = 40;
        Object[][] cases = {{"f32", RopeTable.Style.HALF, 32}, {"bf16", RopeTable.Style.INTERLEAVED, 16}, {"none", RopeTable.Style.HALF, 8}};
        for (Object[] c : cases) {
            String norm = (String) c[0];
            RopeTable.Style style = (RopeTable.Style) c[1];
            int freqs = (Integer) c[2];
            float[] inv = new float[freqs];
            for (int i = 0; i < freqs; i++) {
                inv[i] = (float) Math.pow(10000, -2.0 * i / (2 * freqs));
            }
            RopeTable table = new RopeTable(inv, 1f, 64, style);
            int rowW = (hq + hkv) * d + hkv * dv;
            Tensor qkv = randn(r, 2f, b, rowW);
            int[] pos = {5, 0, 63};
            int[] slots = {7, -1, 22};
            Tensor qn = null;
            Tensor kn = null;
            if (!norm.equals("none")) {
                qn = randn(r, 1f, d);
                kn = randn(r, 1f, d);
                if (norm.equals("bf16")) {
                    qn = Tensor.of(bf16Round(qn.toFloatArray()), d).to(DType.BF16);
                    kn = Tensor.of(bf16Round(kn.toFloatArray()), d).to(DType.BF16);
                }
            }
            // reference: the scalar backend's ops on the q and k slices
            Tensor q = qkv.slice(1, 0, (long) hq * d).contiguous().reshape(b, hq, d);
            Tensor k = qkv.slice(1, (long) hq * d, (long) (hq + hkv) * d).contiguous().reshape(b, hkv, d);
            if (qn != null) {
                Tensor q2 = Tensor.allocate(Arena.ofAuto(), DType.F32, b, hq, d);
                Tensor k2 = Tensor.allocate(Arena.ofAuto(), DType.F32, b, hkv, d);
                cpu.rmsNorm(q, qn, 1e-6f, q2);
                cpu.rmsNorm(k, kn, 1e-6f, k2);
                q = q2;
                k = k2;
            }
            Tensor hostPos = Tensor.ofInts(pos, b);
            cpu.rope(q, hostPos, table);
            cpu.rope(k, hostPos, table);

            Tensor dq = dev(qkv.slice(1, 0, (long) hq * d).contiguous().reshape(b, hq, d));
            Tensor dk = dev(qkv.slice(1, (long) hq * d, (long) (hq + hkv) * d).contiguous().reshape(b, hkv, d));
            Tensor dv3 = dev(qkv.slice(1, (long) (hq + hkv) * d, rowW).contiguous().reshape(b, hkv, dv));
            // bf16 caches: q's bits as with f32 caches, every written key and value that one rounded to nearest even
            {
                Tensor kc32 = poisoned(DType.F32, rows, (long) hkv * d);
                Tensor vc32 = poisoned(DType.F32, rows, (long) hkv * dv);
                Tensor kc16 = dev(Tensor.allocate(Arena.ofAuto(), DType.BF16, rows, (long) hkv * d));
                Tensor vc16 = dev(Tensor.allocate(Arena.ofAuto(), DType.BF16, rows, (long) hkv * dv));
                Tensor q32 = poisoned(DType.F32, b, hq, d);
                Tensor q16 = poisoned(DType.F32, b, hq, d);
                Tensor dSlots = dev(Tensor.ofInts(slots, b));
                Tensor dn = qn == null ? null : dev(qn);
                Tensor dkn = kn == null ? null : dev(kn);
                gpu.pagedDecodePrep(dq, dk, dv3, dn, dkn, 1e-6f, dev(hostPos), table, q32, kc32, vc32, dSlots);
                gpu.pagedDecodePrep(dq, dk, dv3, dn, dkn, 1e-6f, dev(hostPos), table, q16, kc16, vc16, dSlots);
                String what = "pagedDecodePrep into bf16 caches, norm " + norm + " " + style;
                assertArrayEquals(bits(gpu.toHost(q32).toFloatArray()), bits(gpu.toHost(q16).toFloatArray()), what + ": q");
                for (Tensor[] pair : new Tensor[][]{{kc32, kc16}, {vc32, vc16}}) {
                    float[] f = gpu.toHost(pair[0]).toFloatArray();
                    float[] h = gpu.toHost(pair[1]).toFloatArray();
                    int width = f.length / rows;
                    for (int slot : slots) {
                        for (int x = slot < 0 ? width : 0; x < width; x++) {
                            float want = org.orbitrl.kernels.Numerics.bf16ToFloat(org.orbitrl.kernels.Numerics.floatToBf16(f[slot * width + x]));
                            assertEquals(Float.floatToRawIntBits(want), Float.floatToRawIntBits(h[slot * width + x]),
                                    what + ": cache row " + slot + " [" + x + "]");
                        }
                    }
                }
            }
            for (String form : new String[]{"qkvPrep", "pagedDecodePrep", "pagedDecodePrep (host default)"}) {
                boolean host = form.endsWith("(host default)");
                Tensor kc = host ? nanHost(rows, (long) hkv * d) : poisoned(DType.F32, rows, (long) hkv * d);
                Tensor vc = host ? nanHost(rows, (long) hkv * dv) : poisoned(DType.F32, rows, (long) hkv * dv);
                Tensor qOut = host ? nanHost(b, hq, d) : poisoned(DType.F32, b, hq, d);
                Tensor dSlots = dev(Tensor.ofInts(slots, b));
                switch (form) {
                    case "qkvPrep" -> gpu.qkvPrep(dev(qkv), hq, hkv, d, dv, qn == null ? null : dev(qn), kn == null ? null : dev(kn), 1e-6f,
                            dev(hostPos), table, qOut, kc, vc, dSlots);
                    case "pagedDecodePrep" -> gpu.pagedDecodePrep(dq, dk, dv3, qn == null ? null : dev(qn), kn == null ? null : dev(kn),
                            1e-6f, dev(hostPos), table, qOut, kc, vc, dSlots);
                    default -> cpu.pagedDecodePrep(gpu.toHost(dq), gpu.toHost(dk), gpu.toHost(dv3), qn, kn, 1e-6f, hostPos, table, qOut,
                            kc, vc, Tensor.ofInts(slots, b));
                }
                String what = form + " norm " + norm + " " + style + " rotary " + 2 * freqs;
                // the host default is the reference's own steps: equal bits
                double rel = host ? 0 : 1e-5;
                double abs = host ? 0 : 1e-6;
                assertClose(what + ": q", q.toFloatArray(), (host ? qOut : gpu.toHost(qOut)).toFloatArray(), abs, rel);

                float[] kGot = (host ? kc : gpu.toHost(kc)).toFloatArray();
                float[] vGot = (host ? vc : gpu.toHost(vc)).toFloatArray();
                float[] kRef = k.toFloatArray();
                float[] src = qkv.toFloatArray();
                for (int row = 0; row < rows; row++) {
                    int seq = -1;
                    for (int i = 0; i < b; i++) {
                        if (slots[i] == row) {
                            seq = i;
                        }
                    }
                    if (seq < 0) {
                        for (int x = 0; x < hkv * d; x++) {
                            assertTrue(Float.isNaN(kGot[row * hkv * d + x]), what + ": key cache row " + row + " must stay untouched");
                        }
                        for (int x = 0; x < hkv * dv; x++) {
                            assertTrue(Float.isNaN(vGot[row * hkv * dv + x]), what + ": value cache row " + row + " must stay untouched");
                        }
                        continue;
                    }
                    float[] kr = new float[hkv * d];
                    float[] kg = new float[hkv * d];
                    System.arraycopy(kRef, seq * hkv * d, kr, 0, hkv * d);
                    System.arraycopy(kGot, row * hkv * d, kg, 0, hkv * d);
                    assertClose(what + ": key cache row " + row, kr, kg, abs, rel);
                    for (int x = 0; x < hkv * dv; x++) {
                        assertEquals(src[seq * rowW + (hq + hkv) * d + x], vGot[row * hkv * dv + x], 0f,
                                what + ": value cache row " + row + " [" + x + "]");
                    }
                }
            }
        }
    }

    private static int[] bits(float[] v) {
        int[] b = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            b[i] = Float.floatToRawIntBits(v[i]);
        }
        return b;
    }

    private static Tensor nanHost(long... shape) {
        Tensor t = Tensor.allocate(Arena.ofAuto(), DType.F32, shape);
        t.fill(Float.NaN);
        return t;
    }
}
