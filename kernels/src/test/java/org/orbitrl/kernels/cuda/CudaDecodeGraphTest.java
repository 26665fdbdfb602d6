package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.bench.MoeDecodeStack;
import org.orbitrl.kernels.cuda.internal.Launcher;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A whole decode step of a small random Qwen3-MoE-shaped stack (embedding, attention over the paged
 * cache, routed INT4 experts, lm_head, argmax: several hundred launches) captured once as a CUDA
 * graph and replayed step after step gives bit-identical logits and token ids to issuing the same
 * launches directly, at batch 1 (per-pair expert GEMV) and batch 3 (device-grouped experts, with the
 * fused gate-up launch and the unfused launches of {@code moeFusedDecode}), with the fused decode
 * operations ({@link CudaFusedDecode}: norms inside the products, the ticketed router, the experts in two
 * launches at batch 1) and without them. With and without them the logits agree within
 * {@code 1e-3} of their largest magnitude (the norms' sums of squares are reduced in another order;
 * everything else is the same arithmetic). The direct launches are made with dependent launches off
 * (the reference), then again with them on, and the graph is captured with them on (programmatic edges
 * between the step's kernels), where the device has them.
 */
class CudaDecodeGraphTest extends CudaTestBase {
    private static final MoeDecodeStack.Shape SHAPE = new MoeDecodeStack.Shape(256, 2, 4, 2, 64, 128, 16, 4, 512, 1e-6f, 1e6);

    @Test
    void replayedGraphEqualsDirectLaunches() {
        boolean fusedBefore = gpu.moe().moeFusedDecode();
        boolean dependentBefore = gpu.dependentLaunches();
        try {
            for (boolean fused : new boolean[]{true, false}) {
                gpu.moe().moeFusedDecode(fused);
                replayed(fused ? new int[]{1, 3} : new int[]{3}, true);
            }
            gpu.moe().moeFusedDecode(true);
            for (int batch : new int[]{1, 3}) {
                float[][] on = replayed(new int[]{batch}, true);
                float[][] off = replayed(new int[]{batch}, false);
                for (int p = 0; p < on.length; p++) {
                    assertCloseToScale("batch " + batch + " step " + p + ": logits with the fused decode operations vs without",
                            off[p], on[p], 1e-3);
                }
            }
        } finally {
            gpu.moe().moeFusedDecode(fusedBefore);
            gpu.dependentLaunches(dependentBefore);
        }
    }

    /** The direct logits of each step of the last batch. */
    private float[][] replayed(int[] batches, boolean fusedOps) {
        float[][] last = null;
        for (int batch : batches) {
            try (MoeDecodeStack stack = new MoeDecodeStack(gpu, SHAPE, batch, 64, 16, 41 + batch)) {
                stack.fused(fusedOps);
                long[] firstIds = gpu.toHost(stack.tokenIds()).toLongArray();
                boolean dependent = gpu.dependentLaunchesSupported();
                gpu.dependentLaunches(false);
                int steps = 4;
                float[][] direct = new float[steps][];
                long[][] directIds = new long[steps][];
                for (int p = 0; p < steps; p++) {
                    stack.setPosition(p);
                    stack.step();
                    direct[p] = gpu.toHost(stack.logits()).toFloatArray();
                    directIds[p] = gpu.toHost(stack.tokenIds()).toLongArray();
                }
                boolean varied = false;
                for (float f : direct[steps - 1]) {
                    assertTrue(Float.isFinite(f), "direct logits must be finite");
                    varied |= f != direct[steps - 1][0];
                }
                assertTrue(varied, "direct logits must not be constant");
                int[] reset = new int[batch];
                for (int b = 0; b < batch; b++) {
                    reset[b] = (int) firstIds[b];
                }

                if (dependent) {
                    gpu.dependentLaunches(true);
                    long before = Launcher.dependentLaunches();
                    gpu.copyToDevice(Tensor.ofInts(reset, batch), stack.tokenIds());
                    for (int p = 0; p < steps; p++) {
                        stack.setPosition(p);
                        stack.step();
                        assertArrayEquals(direct[p], gpu.toHost(stack.logits()).toFloatArray(), 0f,
                                "batch " + batch + " step " + p + ": direct dependent launches, logits");
                        assertArrayEquals(directIds[p], gpu.toHost(stack.tokenIds()).toLongArray(),
                                "batch " + batch + " step " + p + ": direct dependent launches, token ids");
                    }
                    assertTrue(Launcher.dependentLaunches() - before >= 3L * steps * SHAPE.layers(),
                            "a step's launches are dependent ones: " + (Launcher.dependentLaunches() - before) + " in " + steps + " steps");
                }

                try (CudaGraph g = CudaGraph.capture(gpu.stream(), stack::step)) {
                    if (dependent) {
                        GraphEdges.Counts edges = GraphEdges.of(g);
                        System.out.println("batch " + batch + " decode step graph: " + edges);
                        assertTrue(edges == null || edges.programmatic() >= 3L * SHAPE.layers(),
                                "programmatic edges in the captured step: " + edges);
                    }
                    gpu.copyToDevice(Tensor.ofInts(reset, batch), stack.tokenIds());
                    for (int p = 0; p < steps; p++) {
                        stack.setPosition(p);
                        g.launch(gpu.stream());
                        float[] replay = gpu.toHost(stack.logits()).toFloatArray();
                        assertArrayEquals(direct[p], replay, 0f, "batch " + batch + " step " + p + ": graph replay logits");
                        assertArrayEquals(directIds[p], gpu.toHost(stack.tokenIds()).toLongArray(),
                                "batch " + batch + " step " + p + ": graph replay token ids");
                    }
                }
                last = direct;
            }
        }
        return last;
    }
}
