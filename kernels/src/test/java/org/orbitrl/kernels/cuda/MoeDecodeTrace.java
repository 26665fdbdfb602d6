package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.bench.MoeDecodeStack;

import java.util.Arrays;

/**
 * Where the time of the one-launch decode MLP ({@link CudaFusedDecode#moeDecode}, {@code moe_decode.cu})
 * goes: its blocks' phase timestamps (global timer) on a Qwen3-30B-A3B-shaped stack of a few layers at
 * one sequence, and the captured step's time with the MLP as one launch and as three. A diagnostic, run on the GPU machine:
 * {@code java ... org.orbitrl.kernels.cuda.MoeDecodeTrace [layers]}.
 */
public final class MoeDecodeTrace {
    private static final String[] MARKS = {"start", "h staged", "logits written", "barrier 1", "top-k selected", "gate/up done",
            "barrier 2", "act staged", "end"};

    private MoeDecodeTrace() {
    }

    public static void main(String[] args) {
        int layers = args.length > 0 ? Integer.parseInt(args[0]) : 8;
        MoeDecodeStack.Shape shape = new MoeDecodeStack.Shape(2048, layers, 32, 4, 128, 768, 128, 8, 4096, 1e-6f, 1e6);
        try (CudaBackend gpu = new CudaBackend(); MoeDecodeStack stack = new MoeDecodeStack(gpu, shape, 1, 600, 16, 7)) {
            int context = 512;
            stack.setPosition(context);
            stack.step();
            gpu.synchronize();
            CudaFusedDecode fd = gpu.fusedDecode();
            Tensor trace = gpu.toDevice(Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I64, 2048, 16));
            fd.traceMoe(trace);
            for (int i = 0; i < 5; i++) {
                stack.setPosition(context + i);
                stack.step();
            }
            fd.traceMoe(null);
            long[] t = gpu.toHost(trace).toLongArray();
            int grid = 0;
            while (grid < 2048 && t[grid * 16] != 0) {
                grid++;
            }
            long t0 = Long.MAX_VALUE;
            for (int b = 0; b < grid; b++) {
                t0 = Math.min(t0, t[b * 16]);
            }
            System.out.println("moe_decode phases, last layer of the last step, " + grid + " blocks (µs after the first block's start: min / median / max over blocks)");
            for (int k = 0; k < MARKS.length; k++) {
                double[] v = new double[grid];
                for (int b = 0; b < grid; b++) {
                    v[b] = (t[b * 16 + k] - t0) / 1e3;
                }
                Arrays.sort(v);
                System.out.printf("  %-16s %7.2f %7.2f %7.2f%n", MARKS[k], v[0], v[grid / 2], v[grid - 1]);
            }
            System.out.printf("step, the MLP as one launch: %.3f ms%n", stepMs(gpu, stack, context));
            fd.persistentMoe(false);
            System.out.printf("step, the MLP as three launches: %.3f ms%n", stepMs(gpu, stack, context));
            fd.persistentMoe(true);
            gpu.free(trace);
        }
    }

    private static double stepMs(CudaBackend gpu, MoeDecodeStack stack, int context) {
        try (CudaGraph g = CudaGraph.capture(gpu.stream(), stack::step); CudaEvent a = new CudaEvent(); CudaEvent b = new CudaEvent()) {
            double[] ms = new double[21];
            for (int i = 0; i < ms.length; i++) {
                stack.setPosition(context + i % 8);
                gpu.synchronize();
                a.record(gpu.stream());
                g.launch(gpu.stream());
                b.record(gpu.stream());
                b.synchronize();
                ms[i] = b.elapsedMillisSince(a);
            }
            Arrays.sort(ms);
            return ms[ms.length / 2];
        }
    }
}
