package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.SplittableRandom;

/**
 * Causal attention of one training sequence on the GPU, forward (prefill) and backward: the bf16
 * tensor-core kernels ({@code -Dorbit.cuda.mmaAttention=bf16}, and {@code bf16v2}, {@code bf16v3}, {@code bf16v4}) against the TF32 tensor-core kernels
 * ({@code tf32}) and the f32 kernels ({@code off}), timed in the same run, and against PyTorch's
 * {@code scaled_dot_product_attention} (flash, bf16, causal) when {@code OUT_DIR/peer-attention.txt}
 * holds the peer's figures of the same call ({@code tools/gpu/peer_attention.py}, run first by
 * {@code run-attention-bench}). Shapes: T = 2048 with Qwen3-30B-A3B's heads (32 query, 4 kv,
 * D = 128) and gpt-oss's (64 query, 8 kv, D = 64, window 128, sinks; the peer's row for it is full
 * causal attention, so it is compared by TFLOP/s). Also a training layer's attention with recompute
 * (two forwards and one backward), and the largest difference of each tensor-core variant from the
 * f32 result, relative to that result's scale; and each bf16 variant's backward split into its dq and dk/dv
 * launches ({@code -Dorbit.cuda.mmaAttention.backwardParts=q|kv}).
 * Usage: {@code AttentionMmaBench [OUT_DIR]}; writes {@code attention-mma-bench.md}.
 */
public final class AttentionMmaBench {
    private static final GpuBench TABLE = new GpuBench(78, 30, 34);
    private static final String PROPERTY = "orbit.cuda.mmaAttention";
    private static final String PARTS = "orbit.cuda.mmaAttention.backwardParts";

    private AttentionMmaBench() {
    }

    public static void main(String[] args) throws IOException {
        if (!Cuda.available()) {
            System.out.println("AttentionMmaBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        Path out = args.length > 0 ? Path.of(args[0]) : null;
        List<String> peer = out != null && Files.isRegularFile(out.resolve("peer-attention.txt"))
                ? Files.readAllLines(out.resolve("peer-attention.txt")) : List.of();
        try (CudaBackend gpu = new CudaBackend()) {
            System.out.println("device: " + gpu.device());
            // T, Hq, Hkv, D, window, sinks
            int[][] shapes = {{2048, 32, 4, 128, 0, 0}, {2048, 64, 8, 64, 128, 1}};
            for (int[] sh : shapes) {
                shape(gpu, sh[0], sh[1], sh[2], sh[3], sh[4], sh[5] == 1, peer);
            }
            TABLE.write("Tensor-core attention on " + gpu.device(), out, "attention-mma-bench.md");
        } finally {
            System.clearProperty(PROPERTY);
        }
    }

    private static void shape(CudaBackend gpu, int t, int hq, int hkv, int d, int window, boolean sinks, List<String> peer) {
        SplittableRandom r = new SplittableRandom(7);
        Tensor q = CudaBenchData.randomDevice(gpu, r, DType.F32, (long) t * hq, d).reshape(t, hq, d);
        Tensor k = CudaBenchData.randomDevice(gpu, r, DType.F32, (long) t * hkv, d).reshape(t, hkv, d);
        Tensor v = CudaBenchData.randomDevice(gpu, r, DType.F32, (long) t * hkv, d).reshape(t, hkv, d);
        Tensor dout = CudaBenchData.randomDevice(gpu, r, DType.F32, (long) t * hq, d).reshape(t, hq, d);
        Tensor sinkLogits = sinks ? CudaBenchData.randomDevice(gpu, r, DType.F32, 1, hq).reshape(hq) : null;
        AttentionSpec spec = new AttentionSpec((float) (1 / Math.sqrt(d)), window, sinkLogits);
        String[] paths = {"off", "tf32", "bf16", "bf16v2", "bf16v3", "bf16v4"};
        String[] labels = {"f32 kernels", "tf32", "bf16", "bf16v2", "bf16v3", "bf16v4"};
        Tensor[][] res = new Tensor[paths.length][]; // [path][out, dq, dk, dv]
        for (int p = 0; p < paths.length; p++) {
            res[p] = outputs(gpu, t, hq, hkv, d);
        }
        String what = String.format("T=%d Hq=%d Hkv=%d D=%d%s%s", t, hq, hkv, d, window > 0 ? " window " + window : "",
                sinks ? " sinks" : "");

        double[] fwd = new double[paths.length];
        double[] bwd = new double[paths.length];
        for (int path = 0; path < paths.length; path++) {
            Tensor[] o = res[path];
            System.setProperty(PROPERTY, paths[path]);
            fwd[path] = GpuBench.timeMs(gpu, 10, () -> gpu.attention(q, k, v, o[0], 0, spec));
            bwd[path] = GpuBench.timeMs(gpu, 10, () -> gpu.attentionBackward(q, k, v, dout, 0, spec, o[1], o[2], o[3]));
        }
        // the backward's two launches apart (orbit.cuda.mmaAttention.backwardParts): dq (with the staging copies,
        // lse and delta) and dk/dv, into outputs of their own
        Tensor[] tmp = outputs(gpu, t, hq, hkv, d);
        for (int path = 2; path < paths.length; path++) {
            System.setProperty(PROPERTY, paths[path]);
            try {
                gpu.attentionBackward(q, k, v, dout, 0, spec, tmp[1], tmp[2], tmp[3]);
                System.setProperty(PARTS, "q");
                double qMs = GpuBench.timeMs(gpu, 10, () -> gpu.attentionBackward(q, k, v, dout, 0, spec, tmp[1], tmp[2], tmp[3]));
                System.setProperty(PARTS, "kv");
                double kvMs = GpuBench.timeMs(gpu, 10, () -> gpu.attentionBackward(q, k, v, dout, 0, spec, tmp[1], tmp[2], tmp[3]));
                System.out.printf("  %s backward %s: dq launch(es) %.3f ms, dk/dv launch(es) %.3f ms (whole %.3f ms)%n", what,
                        labels[path], qMs, kvMs, bwd[path]);
            } finally {
                System.clearProperty(PARTS);
            }
        }
        for (Tensor x : tmp) {
            gpu.free(x);
        }
        System.clearProperty(PROPERTY);

        // causal pairs (window-limited) · Hq; forward 2 products (4·D flops a pair), backward 5 (2.5x the forward)
        double pairs = 0;
        for (int i = 0; i < t; i++) {
            pairs += window > 0 ? Math.min(i + 1, window) : i + 1;
        }
        double fwdFlops = 4.0 * hq * d * pairs;
        double bwdFlops = 10.0 * hq * d * pairs;
        double fullPairs = (double) t * (t + 1) / 2;
        String[] peerLine = peerLine(peer, t, hq, hkv, d);
        double peerFwd = peerLine == null ? Double.NaN : Double.parseDouble(peerLine[4]);
        double peerBwd = peerLine == null ? Double.NaN : Double.parseDouble(peerLine[5]) - peerFwd;
        // the peer does full causal attention: compare rates where our window makes the work smaller
        double peerFwdTf = 4.0 * hq * d * fullPairs / (peerFwd * 1e9);
        double peerBwdTf = 10.0 * hq * d * fullPairs / (peerBwd * 1e9);

        for (int pass = 0; pass < 2; pass++) {
            String name = pass == 0 ? "forward" : "backward";
            double[] ms = pass == 0 ? fwd : bwd;
            double flops = pass == 0 ? fwdFlops : bwdFlops;
            for (int p = 1; p < paths.length; p++) {
                double tf = flops / (ms[p] * 1e9);
                TABLE.row("attention " + name + " " + labels[p] + " tensor cores " + what, String.format("%.3f ms (%.1f TFLOP/s)", ms[p], tf),
                        String.format("f32 kernels %.3f ms (%.1f TFLOP/s)", ms[0], flops / (ms[0] * 1e9)), ms[0] / ms[p]);
            }
            TABLE.row("attention " + name + " bf16 vs tf32 tensor cores " + what, String.format("%.3f ms", ms[2]),
                    String.format("tf32 %.3f ms", ms[1]), ms[1] / ms[2]);
            for (int p = 3; p < paths.length; p++) {
                TABLE.row("attention " + name + " " + labels[p] + " vs bf16 tensor cores " + what, String.format("%.3f ms", ms[p]),
                        String.format("bf16 %.3f ms", ms[2]), ms[2] / ms[p]);
            }
            if (peerLine != null) {
                double peerTf = pass == 0 ? peerFwdTf : peerBwdTf;
                double peerMs = pass == 0 ? peerFwd : peerBwd;
                for (int p = 1; p < paths.length; p++) {
                    double tf = flops / (ms[p] * 1e9);
                    TABLE.row("attention " + name + " " + labels[p] + " vs torch sdpa " + what, String.format("%.1f TFLOP/s", tf),
                            String.format("sdpa bf16 %.3f ms (%.1f TFLOP/s)", peerMs, peerTf), tf / peerTf);
                }
            }
        }
        double[] train = new double[paths.length];
        for (int p = 0; p < paths.length; p++) {
            train[p] = 2 * fwd[p] + bwd[p];
        }
        for (int p = 1; p < paths.length; p++) {
            TABLE.row("training attention (2 forwards + backward) " + labels[p] + " " + what, String.format("%.3f ms", train[p]),
                    String.format("f32 kernels %.3f ms", train[0]), train[0] / train[p]);
        }
        TABLE.row("training attention (2 forwards + backward) bf16 vs tf32 " + what, String.format("%.3f ms", train[2]),
                String.format("tf32 %.3f ms", train[1]), train[1] / train[2]);
        for (int p = 3; p < paths.length; p++) {
            TABLE.row("training attention (2 forwards + backward) " + labels[p] + " vs bf16 " + what, String.format("%.3f ms", train[p]),
                    String.format("bf16 %.3f ms", train[2]), train[2] / train[p]);
        }
        if (peerLine != null) {
            double peerTrainTf = (2 * 4.0 + 10.0) * hq * d * fullPairs / ((2 * peerFwd + peerBwd) * 1e9);
            for (int p = 1; p < paths.length; p++) {
                double tf = (2 * fwdFlops + bwdFlops) / (train[p] * 1e9);
                TABLE.row("training attention (2 forwards + backward) " + labels[p] + " vs torch sdpa " + what,
                        String.format("%.1f TFLOP/s", tf), String.format("sdpa bf16 %.1f TFLOP/s", peerTrainTf), tf / peerTrainTf);
            }
        } else {
            System.out.println("  (no peer-attention.txt: run tools/gpu/peer_attention.py OUT_DIR first for the sdpa ratios)");
        }
        String[] names = {"out", "dq", "dk", "dv"};
        for (int p = 1; p < paths.length; p++) {
            for (int i = 0; i < 4; i++) {
                float[] a = gpu.toHost(res[0][i]).toFloatArray();
                float[] b = gpu.toHost(res[p][i]).toFloatArray();
                double scale = 0;
                double worst = 0;
                for (float x : a) {
                    scale = Math.max(scale, Math.abs(x));
                }
                for (int j = 0; j < a.length; j++) {
                    worst = Math.max(worst, Math.abs(a[j] - b[j]));
                }
                System.out.printf("  %s %s: max |%s - f32| / max |f32| = %.3g%n", what, names[i], labels[p], worst / scale);
            }
        }
        for (Tensor[] o : res) {
            for (Tensor x : o) {
                gpu.free(x);
            }
        }
        for (Tensor x : new Tensor[]{q, k, v, dout}) {
            gpu.free(x);
        }
        if (sinkLogits != null) {
            gpu.free(sinkLogits);
        }
    }

    private static String[] peerLine(List<String> peer, int t, int hq, int hkv, int d) {
        for (String line : peer) {
            String[] f = line.trim().split("\\s+");
            if (f.length >= 6 && f[0].equals("" + t) && f[1].equals("" + hq) && f[2].equals("" + hkv) && f[3].equals("" + d)) {
                return f;
            }
        }
        return null;
    }

    /** out and dq [T, Hq, D], dk and dv [T, Hkv, D]. */
    private static Tensor[] outputs(CudaBackend gpu, int t, int hq, int hkv, int d) {
        return new Tensor[]{
                gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, hq, d),
                gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, hq, d),
                gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, hkv, d),
                gpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, t, hkv, d)};
    }
}
