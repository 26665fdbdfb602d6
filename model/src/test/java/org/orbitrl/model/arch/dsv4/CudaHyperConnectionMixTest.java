package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.CudaBackendPair;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4's hyper-connection mixes on the device ({@link org.orbitrl.kernels.Backend#hyperConnectionMix},
 * {@code hc_mix}: the sigmoids of pre and post, comb's row softmax and 2·20−1 Sinkhorn normalisations) against the
 * model's host map on the same projections, within 2e-6 absolute (the mixes lie in [0, 2]; f32 on both sides, the
 * device's expf against the host's exp rounded to f32), for hc 4 (V4-Flash and Pro) and 2 (the fixture), 37 token
 * rows of seeded projections; in exact mode the same kernel, each row from its own values (a row alone gives the
 * same bits). A projection of the wrong width is refused, naming the shapes. Skipped where there is no CUDA device.
 */
class CudaHyperConnectionMixTest {
    @RegisterExtension
    static final CudaBackendPair GPU = new CudaBackendPair();

    @Test
    void theDevicesMixesAreTheHostMapsAndEachRowItsOwn() {
        SplittableRandom r = new SplittableRandom(77);
        for (int hc : new int[]{4, 2}) {
            int mm = (2 + hc) * hc;
            int n = 37;
            float[] base = new float[mm];
            for (int i = 0; i < mm; i++) {
                base[i] = (float) r.nextGaussian();
            }
            float[] scale = {0.7f, 1.3f, 2.1f};
            DeepseekV4HyperConnection hcn = new DeepseekV4HyperConnection(new float[mm * hc * 8], base, scale, hc, 8, 20,
                    1e-6f, 1e-6f);
            float[] mv = new float[n * mm];
            for (int i = 0; i < mv.length; i++) {
                mv[i] = (float) (r.nextGaussian() * 3);
            }
            float[] host = hcn.map(null, null, new Node(mv), n).v();
            for (CudaBackend gpu : new CudaBackend[]{GPU.fast(), GPU.exact()}) {
                Node m = Node.onDevice(gpu.allocator(), gpu.allocator().uploadFloats(MemoryCategory.ACTIVATIONS, mv, n, mm));
                Node y = hcn.map(null, gpu, m, n);
                assertTrue(y.onDevice(), "the mixes stay in device memory");
                float[] got = y.v();
                double worst = 0;
                for (int i = 0; i < host.length; i++) {
                    worst = Math.max(worst, Math.abs(got[i] - host[i]));
                }
                System.out.printf("hc %d%s: worst |device - host| %.3g%n", hc, gpu.exact() ? " (exact mode)" : "", worst);
                assertTrue(worst <= 2e-6, "hc " + hc + ": worst |device - host| " + worst);
                Node one = Node.onDevice(gpu.allocator(), gpu.allocator().uploadFloats(MemoryCategory.ACTIVATIONS,
                        java.util.Arrays.copyOfRange(mv, 5 * mm, 6 * mm), 1, mm));
                org.junit.jupiter.api.Assertions.assertArrayEquals(java.util.Arrays.copyOfRange(got, 5 * mm, 6 * mm),
                        hcn.map(null, gpu, one, 1).v(), 0f, "row 5 alone");
            }
        }
        CudaBackend gpu = GPU.fast();
        Tensor m = gpu.allocator().uploadFloats(MemoryCategory.ACTIVATIONS, new float[3 * 20], 3, 20);
        Tensor base = gpu.allocator().uploadFloats(MemoryCategory.ACTIVATIONS, new float[24], 24);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> gpu.hyperConnectionMix(m, base, 1f, 1f, 1f, 4, 20, 1e-6f, m));
        assertTrue(e.getMessage().contains("[N, 24]") && e.getMessage().contains("[3, 20]"), e.getMessage());
    }

    /**
     * The collapse and the expansion on the device ({@link org.orbitrl.kernels.Backend#hyperConnectionCollapse}, {@code
     * hyperConnectionExpand}) against the host's loops ({@link DeepseekV4HyperConnection#collapse} with no backend) bit
     * for bit, in both modes, for hc 4 at V4-Flash's width (4096) and hc 2 at an odd width over 37 and 1 token rows of
     * seeded mixes and streams (each product rounded, then added in the host's order: no contraction). Streams of the
     * wrong shape are refused, naming the shapes.
     */
    @Test
    void collapseAndExpansionAreTheHostLoopsBitForBit() {
        SplittableRandom r = new SplittableRandom(78);
        for (int[] sh : new int[][]{{4, 4096, 37}, {2, 333, 37}, {4, 4096, 1}}) {
            int hc = sh[0];
            int h = sh[1];
            int n = sh[2];
            int mm = (2 + hc) * hc;
            float[] wv = gaussian(r, n * mm, 1);
            float[] fv = gaussian(r, n * h, 2);
            float[] sv = gaussian(r, n * hc * h, 2);
            DeepseekV4HyperConnection hcn = new DeepseekV4HyperConnection(new float[mm * hc * h], new float[mm],
                    new float[]{1f, 1f, 1f}, hc, h, 20, 1e-6f, 1e-6f);
            float[] wantC = DeepseekV4HyperConnection.collapse(null, null, new Node(wv), mm, new Node(sv), hc, h).v();
            float[] wantE = hcn.expand(null, new Node(wv), new Node(fv), new Node(sv)).v();
            for (CudaBackend gpu : new CudaBackend[]{GPU.fast(), GPU.exact()}) {
                var a = gpu.allocator();
                Tensor w = a.uploadFloats(MemoryCategory.ACTIVATIONS, wv, n, mm);
                Tensor f = a.uploadFloats(MemoryCategory.ACTIVATIONS, fv, n, h);
                Tensor s = a.uploadFloats(MemoryCategory.ACTIVATIONS, sv, n, hc, h);
                Tensor y = a.allocate(MemoryCategory.ACTIVATIONS, org.orbitrl.kernels.DType.F32, n, h);
                Tensor out = a.allocate(MemoryCategory.ACTIVATIONS, org.orbitrl.kernels.DType.F32, n, hc, h);
                assertTrue(gpu.hyperConnectionCollapse(w, s, y), "the backend takes the collapse");
                assertTrue(gpu.hyperConnectionExpand(w, f, s, out), "the backend takes the expansion");
                String what = "hc " + hc + ", H " + h + ", " + n + " rows" + (gpu.exact() ? " (exact mode)" : "");
                org.junit.jupiter.api.Assertions.assertArrayEquals(wantC, a.toFloats(y), 0f, what + ": collapse");
                org.junit.jupiter.api.Assertions.assertArrayEquals(wantE, a.toFloats(out), 0f, what + ": expansion");
                boolean varied = false;
                for (int i = 1; i < wantE.length; i++) {
                    varied |= wantE[i] != wantE[0];
                }
                assertTrue(varied, "the expansion's values vary");
            }
        }
        CudaBackend gpu = GPU.fast();
        var a = gpu.allocator();
        Tensor w = a.uploadFloats(MemoryCategory.ACTIVATIONS, new float[3 * 24], 3, 24);
        Tensor flat = a.uploadFloats(MemoryCategory.ACTIVATIONS, new float[3 * 40], 3, 40);
        Tensor y = a.allocate(MemoryCategory.ACTIVATIONS, org.orbitrl.kernels.DType.F32, 3, 10);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> gpu.hyperConnectionCollapse(w, flat, y));
        assertTrue(e.getMessage().contains("[3, 40]"), e.getMessage());
    }

    private static float[] gaussian(SplittableRandom r, int n, double sd) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (r.nextGaussian() * sd);
        }
        return v;
    }
}
