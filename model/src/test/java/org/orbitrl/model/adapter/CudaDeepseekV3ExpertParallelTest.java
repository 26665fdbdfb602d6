package org.orbitrl.model.adapter;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.orbitrl.kernels.comm.Communicator;
import org.orbitrl.kernels.comm.HostStagedRanks;
import org.orbitrl.kernels.comm.LocalRanks;
import org.orbitrl.kernels.comm.NcclCommunicator;
import org.orbitrl.kernels.comm.NcclRanks;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.parallel.ParallelLayout;
import org.orbitrl.model.parallel.RankGroups;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * DeepSeek-V3 / Kimi-K2's expert parallelism on the device: the deepseek_v3 fixture's LoRA step split over 2 ranks
 * against one GPU, over NCCL on two GPUs (skipped with fewer) and on two logical ranks of GPU 0 (collectives staged
 * through the host). Exact mode: logits and every adapter gradient the one GPU's bit for bit (the grouped form's kernels,
 * row-invariant products); the default kernels (bf16 activations into their products, products that may depend on how
 * many rows share them): within 2e-2 relative L2, whether the bits agree printed.
 */
class CudaDeepseekV3ExpertParallelTest {
    @BeforeAll
    static void needCuda() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
    }

    @ParameterizedTest(name = "exact {0}, recompute {1}, over NCCL {2}")
    @CsvSource({"true, false, false", "false, true, false", "true, true, true", "false, false, true"})
    void expertParallelStepOnTheDeviceMatchesOneGpu(boolean exact, boolean recompute, boolean nccl) throws Exception {
        assumeTrue(!nccl || Cuda.deviceCount() >= 2, () -> "NCCL needs 2 GPUs; this machine has " + Cuda.deviceCount());
        DeepseekV3ExpertParallelTest.Result one;
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), exact)) {
            one = DeepseekV3ExpertParallelTest.step(gpu, null, recompute, true);
        }
        ParallelLayout layout = new ParallelLayout(2, 1, 2);
        List<CudaBackend> backends = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            backends.add(new CudaBackend(nccl ? i : 0, CudaBackend.defaultCacheDir(), exact));
        }
        List<DeepseekV3ExpertParallelTest.Result> ranks;
        try {
            if (nccl) {
                List<NcclCommunicator> comms = NcclCommunicator.initAll(backends);
                try {
                    ranks = NcclRanks.run(comms, (c, gpu) -> DeepseekV3ExpertParallelTest.step(gpu, RankGroups.split(layout, c),
                            recompute, true));
                } finally {
                    comms.forEach(Communicator::close);
                }
            } else {
                ranks = LocalRanks.run(2, c -> DeepseekV3ExpertParallelTest.step(backends.get(c.rank()),
                        RankGroups.split(layout, new HostStagedRanks(c, backends.get(c.rank()))), recompute, true));
            }
        } finally {
            backends.forEach(CudaBackend::close);
        }
        String what = "deepseek_v3 ep 2" + (exact ? " exact" : "") + (nccl ? " NCCL" : " one GPU");
        double worst = 0;
        boolean same = true;
        for (int r = 0; r < 2; r++) {
            var got = ranks.get(r);
            worst = Math.max(worst, close(what + " rank " + r + " logits", one.logits(), got.logits(), exact));
            same &= java.util.Arrays.equals(one.logits(), got.logits());
            assertEquals(one.grads().keySet(), got.grads().keySet(), what + ": adapter parameters");
            for (var e : one.grads().entrySet()) {
                worst = Math.max(worst, close(what + " rank " + r + " " + e.getKey(), e.getValue(), got.grads().get(e.getKey()),
                        exact));
                same &= java.util.Arrays.equals(e.getValue(), got.grads().get(e.getKey()));
            }
        }
        assertTrue(!exact || same, what + ": exact mode's split step must be one GPU's bit for bit (worst " + worst + ")");
        System.out.printf("%s: %d adapter gradients, worst %s %.3g; %s%n", what, one.grads().size(),
                exact ? "|err|/max|ref|" : "relative L2", worst, same ? "the same bits" : "not the same bits");
    }

    private static double close(String what, float[] ref, float[] got, boolean exact) {
        assertEquals(ref.length, got.length, what + ": element count");
        double max = 0;
        double diff = 0;
        double norm = 0;
        double worst = 0;
        for (float v : ref) {
            max = Math.max(max, Math.abs(v));
        }
        for (int i = 0; i < ref.length; i++) {
            double d = Math.abs((double) got[i] - ref[i]);
            diff += d * d;
            norm += (double) ref[i] * ref[i];
            if (exact) {
                assertTrue(d <= 1e-5 * max + 1e-4 * Math.abs(ref[i]), what + " [" + i + "]: ref " + ref[i] + " got " + got[i]);
            }
            worst = Math.max(worst, max > 0 ? d / max : d);
        }
        if (!exact) {
            double rel = norm > 0 ? Math.sqrt(diff / norm) : Math.sqrt(diff);
            assertTrue(rel <= 2e-2, what + ": relative L2 " + rel);
            return rel;
        }
        return worst;
    }
}
