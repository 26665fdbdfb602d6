package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;

import java.io.IOException;
import java.nio.file.Path;
import java.util.SplittableRandom;

/**
 * Causal attention backward on the GPU for one training sequence: the tiled kernels (default)
 * and the warp-per-row kernels ({@code -Dorbit.cuda.attentionBackward=warp}) against the tiled
 * forward (flash prefill) of the same shape, timed in the same run. Also reports the largest
 * difference between the two backward paths, relative to 1e-5 + 1e-4·|warp result|. The
 * tensor-core kernels are turned off here ({@code -Dorbit.cuda.mmaAttention=off}); AttentionMmaBench
 * measures them.
 * Usage: {@code AttentionBackwardBench [OUT_DIR]}; writes {@code attention-backward-bench.md}.
 */
public final class AttentionBackwardBench {
    private static final GpuBench TABLE = new GpuBench(64, 26, 30);
    private static final String PROPERTY = "orbit.cuda.attentionBackward";
    private static final String MMA_PROPERTY = "orbit.cuda.mmaAttention";

    private AttentionBackwardBench() {
    }

    public static void main(String[] args) throws IOException {
        if (!Cuda.available()) {
            System.out.println("AttentionBackwardBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        Path out = args.length > 0 ? Path.of(args[0]) : null;
        System.setProperty(MMA_PROPERTY, "off");
        try (CudaBackend gpu = new CudaBackend()) {
            System.out.println("device: " + gpu.device());
            // T, Hq, Hkv, D, window, sinks: Qwen3-30B-A3B; a gpt-oss style layer (window 128 + sinks)
            int[][] shapes = {{2048, 32, 4, 128, 0, 0}, {2048, 64, 8, 64, 128, 1}};
            for (int[] sh : shapes) {
                shape(gpu, sh[0], sh[1], sh[2], sh[3], sh[4], sh[5] == 1);
            }
            TABLE.write("Attention backward on " + gpu.device(), out, "attention-backward-bench.md");
        } finally {
            System.clearProperty(PROPERTY);
            System.clearProperty(MMA_PROPERTY);
        }
    }

    private static void shape(CudaBackend gpu, int t, int hq, int hkv, int d, int window, boolean sinks) {
        SplittableRandom r = new SplittableRandom(7);
        Tensor q = CudaBenchData.randomDevice(gpu, r, DType.F32, (long) t * hq, d).reshape(t, hq, d);
        Tensor k = CudaBenchData.randomDevice(gpu, r, DType.F32, (long) t * hkv, d).reshape(t, hkv, d);
        Tensor v = CudaBenchData.randomDevice(gpu, r, DType.F32, (long) t * hkv, d).reshape(t, hkv, d);
        Tensor dout = CudaBenchData.randomDevice(gpu, r, DType.F32, (long) t * hq, d).reshape(t, hq, d);
        Tensor sinkLogits = sinks ? CudaBenchData.randomDevice(gpu, r, DType.F32, 1, hq).reshape(hq) : null;
        AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), window, sinkLogits);
        Tensor o = gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, hq, d);
        Tensor[] tiled = grads(gpu, t, hq, hkv, d);
        Tensor[] warp = grads(gpu, t, hq, hkv, d);
        String what = String.format("T=%d Hq=%d Hkv=%d D=%d%s%s", t, hq, hkv, d, window > 0 ? " window " + window : "",
                sinks ? " sinks" : "");

        double fwd = GpuBench.timeMs(gpu, 5, () -> gpu.attention(q, k, v, o, 0, spec));
        System.setProperty(PROPERTY, "tiled");
        double tiledMs = GpuBench.timeMs(gpu, 5, () -> gpu.attentionBackward(q, k, v, dout, 0, spec, tiled[0], tiled[1], tiled[2]));
        System.setProperty(PROPERTY, "warp");
        double warpMs = GpuBench.timeMs(gpu, 3, () -> gpu.attentionBackward(q, k, v, dout, 0, spec, warp[0], warp[1], warp[2]));
        System.setProperty(PROPERTY, "tiled");

        // causal pairs (window-limited) · Hq; forward 2 products, backward the usual 5 (2.5x the forward)
        double pairs = 0;
        for (int i = 0; i < t; i++) {
            pairs += window > 0 ? Math.min(i + 1, window) : i + 1;
        }
        double bwdFlops = 10.0 * hq * d * pairs;
        TABLE.row("attention forward " + what, String.format("%.2f ms", fwd), "-", 1.0);
        TABLE.row("attention backward tiled " + what, String.format("%.2f ms (%.1f TFLOP/s)", tiledMs, bwdFlops / (tiledMs * 1e9)),
                String.format("forward %.2f ms", fwd), fwd / tiledMs);
        TABLE.row("attention backward warp-per-row " + what, String.format("%.2f ms", warpMs),
                String.format("forward %.2f ms", fwd), fwd / warpMs);
        TABLE.row("attention backward tiled speedup " + what, String.format("%.1fx", warpMs / tiledMs),
                String.format("warp-per-row %.2f ms", warpMs), warpMs / tiledMs);
        double worst = 0;
        for (int i = 0; i < 3; i++) {
            float[] a = gpu.toHost(tiled[i]).toFloatArray();
            float[] b = gpu.toHost(warp[i]).toFloatArray();
            for (int j = 0; j < a.length; j++) {
                worst = Math.max(worst, Math.abs(a[j] - b[j]) / (1e-5 + 1e-4 * Math.abs(b[j])));
            }
        }
        System.out.printf("  %s: tiled vs warp-per-row, worst |diff| / (1e-5 + 1e-4 |warp|) = %.4f%n", what, worst);
        for (Tensor x : new Tensor[]{q, k, v, dout, o, tiled[0], tiled[1], tiled[2], warp[0], warp[1], warp[2]}) {
            gpu.free(x);
        }
        if (sinkLogits != null) {
            gpu.free(sinkLogits);
        }
    }

    /** dq [T, Hq, D], dk and dv [T, Hkv, D]. */
    private static Tensor[] grads(CudaBackend gpu, int t, int hq, int hkv, int d) {
        return new Tensor[]{
                gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, hq, d),
                gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, hkv, d),
                gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, hkv, d)};
    }
}
