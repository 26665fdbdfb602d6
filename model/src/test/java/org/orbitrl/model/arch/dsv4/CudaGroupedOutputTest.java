package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.quant.Fp8Block128Ue8m0;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.CudaBackendPair;
import org.orbitrl.model.nn.Placement;
import org.orbitrl.model.nn.Weight;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4's wo_a ({@link GroupedOutput}) on the CUDA backend with the weight in V4's stored form, FP8 E4M3 with
 * E8M0 block scales in device memory, each head group's 128 rows a view of it: against the closed form over the
 * decoded weight (1e-5 of each output's largest magnitude, as {@link GroupedOutputTest}) at 1, 3, 5, 32 and 300 tokens
 * (the default kernels take every group in one call up to 256 tokens, {@code Backend#matmulF32Grouped}) with the
 * default kernels and in exact mode; in exact mode the rows of 3 tokens equal the same tokens' rows inside a batch of
 * 40 bit for bit (what rollout's recompute needs). Skipped, with the reason, where no CUDA device is present.
 */
class CudaGroupedOutputTest {
    @RegisterExtension
    static final CudaBackendPair GPU = new CudaBackendPair();

    @Test
    void fp8GroupViewsOnTheDeviceMatchTheClosedFormAndExactModeIsBatchInvariant() {
        int groups = 2;
        int in = 256;
        int r = 128;
        SplittableRandom rnd = new SplittableRandom(41);
        QuantizedTensor q = Fp8Block128Ue8m0.INSTANCE.quantize(
                Tensor.of(GroupedOutputTest.random(rnd, groups * r * in), (long) groups * r, in));
        float[] wv = Weight.decoded(Weight.of(q)).toFloatArray();
        for (CudaBackend gpu : new CudaBackend[]{GPU.fast(), GPU.exact()}) {
            Weight placed = Placement.weight(gpu.allocator(), Weight.of(q));
            assertTrue(placed instanceof Weight.Quantized pq && gpu.allocator().owns(pq.w().codes()), "FP8 in device memory");
            GroupedOutput p = new GroupedOutput(placed, groups, in, r);
            for (int n : new int[]{1, 3, 5, 32, 300}) {   // the grouped forms (1-4 and 5-256 rows), then a group at a time
                GroupedOutputTest.check(p, gpu, wv, rnd, n, groups, in, r);
            }
            if (gpu.exact()) {
                int n = 40;
                int few = 3;
                float[] o = GroupedOutputTest.random(rnd, n * groups * in);
                float[] dy = GroupedOutputTest.random(rnd, n * groups * r);
                float[][] all = GroupedOutputTest.run(p, gpu, o, dy, n);
                float[][] some = GroupedOutputTest.run(p, gpu, Arrays.copyOf(o, few * groups * in),
                        Arrays.copyOf(dy, few * groups * r), few);
                assertArrayEquals(Arrays.copyOf(all[0], few * groups * r), some[0], "y of the first tokens (exact)");
            }
        }
    }
}
