package org.orbitrl.model.parallel;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.comm.NcclCommunicator;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.model.arch.Qwen3Model;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.function.Consumer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The fixture training step (forward, the fixture's policy-gradient loss, adapter-only backward, the
 * parallel gradients completed over NCCL) on one GPU and on two GPUs of this machine, one thread,
 * backend and NCCL communicator per GPU, with tensor parallelism, expert parallelism and both; the
 * Hugging Face qwen3 / qwen3_moe fixtures and their PEFT LoRA adapter (attention q/k/v/o and the
 * experts), routed experts in f32 or INT4 group-32 through the chunked path.
 *
 * <p>Tolerances, as on the CPU's logical ranks ({@link ParallelTrainingStepTest}): loss within 1e-6
 * relative, logits and every adapter gradient within |Δ| ≤ 1e-5·max|ref| + 1e-4·|ref|. In exact mode
 * (batch-invariant kernels) with expert parallelism alone, the two GPUs' step is the one GPU's bit for
 * bit: each expert sees the same rows in the same order, and the router's rows do not depend on how
 * many rows share its product. There the one-GPU reference runs the experts one at a time, as the
 * owners do. Skipped, with the reason, on machines with fewer than two GPUs.
 */
class CudaParallelStepTest {
    private static final int WORLD = 2;

    @BeforeAll
    static void needTwoGpus() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        int gpus = Cuda.deviceCount();
        assumeTrue(gpus >= WORLD, () -> "the parallel step on GPUs needs " + WORLD + " GPUs; this machine has " + gpus);
    }

    @ParameterizedTest(name = "{0} on 2 GPUs: tp {1}, ep {2}, exact {3}, experts {4}, recompute {5}")
    @CsvSource({
            "qwen3, 2, 1, false, f32, false",
            "qwen3, 2, 1, true, f32, true",
            "qwen3_moe, 1, 2, false, f32, false",
            "qwen3_moe, 1, 2, true, f32, false",
            "qwen3_moe, 2, 2, false, f32, true",
            "qwen3_moe, 1, 2, false, int4-g32, false",
            "qwen3_moe, 2, 2, false, int4-g32, false",
    })
    void stepOnTwoGpusMatchesOne(String arch, int tp, int ep, boolean exact, String experts, boolean recompute)
            throws Exception {
        ParallelTrainingStepTest.Fixture f = new ParallelTrainingStepTest.Fixture(arch);
        QuantFormat quant = experts.equals("f32") ? null : QuantFormats.byName(experts);
        int chunk = quant == null ? 0 : 2;
        boolean bitExact = exact && tp == 1;
        Consumer<Qwen3Model> tune = bitExact ? m -> m.setGroupedExperts(false) : m -> { };
        ParallelTrainingStepTest.StepResult one;
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), exact)) {
            one = f.step(gpu, null, recompute, 0, f.seqs.size(), quant, chunk, tune);
        }
        ParallelLayout layout = new ParallelLayout(WORLD, tp, ep);
        List<ParallelTrainingStepTest.StepResult> ranks = onGpus(exact,
                (comm, gpu) -> f.step(gpu, RankGroups.split(layout, comm), recompute, 0, f.seqs.size(), quant, chunk));
        String what = arch + " " + layout + (exact ? " exact" : "") + " experts " + experts;
        double worstLogits = 0;
        for (int r = 0; r < WORLD; r++) {
            ParallelTrainingStepTest.StepResult got = ranks.get(r);
            assertEquals(one.loss(), got.loss(), bitExact ? 0 : 1e-6 * Math.abs(one.loss()), what + " GPU " + r + " loss");
            worstLogits = Math.max(worstLogits,
                    ParallelTrainingStepTest.assertClose(what + " GPU " + r + " logits", one.logits(), got.logits(), bitExact));
        }
        double worstGrad = 0;
        for (String name : one.grads().keySet()) {
            List<Tensor> blocks = new ArrayList<>();
            for (int t = 0; t < tp; t++) {
                blocks.add(ranks.get(t).grads().get(name));
            }
            worstGrad = Math.max(worstGrad, ParallelTrainingStepTest.assertClose(what + " gradient " + name,
                    one.grads().get(name).toFloatArray(),
                    AdapterParallel.gatherTensorParallel(name, blocks).toFloatArray(), bitExact));
        }
        System.out.printf("%s: loss %.9g on one GPU, %.9g on %d; %d adapter gradients; worst |err|/max|ref| logits %.3g,"
                + " gradients %.3g%n", what, one.loss(), ranks.get(0).loss(), WORLD, one.grads().size(), worstLogits, worstGrad);
    }

    interface RankBody<T> {
        T run(NcclCommunicator comm, CudaBackend gpu) throws Exception;
    }

    /** {@code body} on one thread per GPU, each with its backend and its communicator of an {@code ncclCommInitAll} world. */
    static <T> List<T> onGpus(boolean exact, RankBody<T> body) throws Exception {
        List<CudaBackend> backends = new ArrayList<>();
        for (int i = 0; i < WORLD; i++) {
            backends.add(new CudaBackend(i, CudaBackend.defaultCacheDir(), exact));
        }
        List<NcclCommunicator> comms = NcclCommunicator.initAll(backends);
        ExecutorService pool = Executors.newFixedThreadPool(WORLD);
        try {
            List<Future<T>> fs = new ArrayList<>();
            for (NcclCommunicator c : comms) {
                fs.add(pool.submit(() -> body.run(c, c.backend())));
            }
            List<T> out = new ArrayList<>();
            for (Future<T> f : fs) {
                out.add(f.get());
            }
            return out;
        } finally {
            pool.shutdownNow();
            comms.forEach(NcclCommunicator::close);
            backends.forEach(CudaBackend::close);
        }
    }
}
