package org.orbitrl.model.arch;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The grouped sparse MoE block on the CUDA backend in its default mode (routing, grouping and the
 * routing backward in {@code moe_train.cu}; experts dequantized C at a time to bf16 and multiplied by
 * cuBLAS; the experts' LoRA as grouped products) against the per-expert path with host routing on
 * the CPU backend, for the same seeded block ({@link GroupedMoeTest.Block}: 8 experts, 4 of which never
 * routed, LoRA on every expert projection), f32 and int4-g32 experts, C = 1, 3 and E. The routing
 * choices are equal; the output and the input gradient within 1e-2 relative (‖cuda − cpu‖ / ‖cpu‖;
 * the expert products round their inputs and weights to bf16, 2⁻⁹ each), every LoRA gradient within
 * 5e-2 relative (an expert with few rows sums few, partly cancelling products; 1.3e-2 seen on the H200).
 * Skipped where no CUDA device is present.
 */
class CudaGroupedMoeTest {
    private static CudaBackend gpu;

    @BeforeAll
    static void open() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        gpu = new CudaBackend();
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
        }
    }

    @Test
    void groupedBlockOnCudaMatchesThePerExpertCpuPath() {
        int tokens = 23;
        for (boolean quantized : new boolean[]{false, true}) {
            GroupedMoeTest.Block ref = GroupedMoeTest.Block.random(41, quantized);
            ref.moe.setGrouped(false);
            SplittableRandom r = new SplittableRandom(9);
            Tensor x = GroupedMoeTest.rand(r, 0.1f, 1f, tokens, GroupedMoeTest.Block.H);
            Tensor dout = GroupedMoeTest.rand(r, -1f, 1f, tokens, GroupedMoeTest.Block.H);
            float[][] want = ref.run(x, dout);
            int[] wantIds = ref.lastTape.routing.expert();
            for (int chunk : new int[]{1, 3, 8}) {
                GroupedMoeTest.Block got = GroupedMoeTest.Block.random(41, quantized, gpu);
                got.moe.setExpertChunk(chunk);
                float[][] have = got.run(x, dout);
                String what = (quantized ? "int4-g32" : "f32") + " experts, chunk " + chunk;
                assertTrue(got.lastTape.grouped != null, what + ": the grouped path ran");
                long[] ids = gpu.toHost(got.lastTape.grouped.routed.ids()).toLongArray();
                int[] gotIds = new int[ids.length];
                for (int i = 0; i < ids.length; i++) {
                    gotIds[i] = (int) ids[i];
                }
                assertArrayEquals(wantIds, gotIds, what + ": routing choices");
                double worst = 0;
                for (int i = 0; i < want.length; i++) {
                    double diff = 0;
                    double norm = 0;
                    for (int j = 0; j < want[i].length; j++) {
                        diff += (have[i][j] - want[i][j]) * (double) (have[i][j] - want[i][j]);
                        norm += want[i][j] * (double) want[i][j];
                    }
                    if (norm == 0) {   // an expert without pairs: its LoRA gradients stay zero on both
                        assertTrue(diff == 0, what + ": tensor " + i + " should be zero, |got|² " + diff);
                        continue;
                    }
                    double rel = Math.sqrt(diff / norm);
                    String name = i == 0 ? "out" : i == 1 ? "dx" : "LoRA gradient " + (i - 2);
                    double limit = i < 2 ? 1e-2 : 5e-2;
                    assertTrue(rel < limit, what + ": " + name + " relative error " + rel + " (limit " + limit + ")");
                    worst = Math.max(worst, rel);
                }
                System.out.printf("grouped MoE block on cuda, %s: worst relative error %.3g%n", what, worst);
            }
        }
    }
}
