package org.orbitrl.model.parallel;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.comm.Communicator;
import org.orbitrl.kernels.comm.HostStagedRanks;
import org.orbitrl.kernels.comm.LocalRanks;
import org.orbitrl.kernels.comm.NcclCommunicator;
import org.orbitrl.kernels.comm.NcclRanks;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.model.arch.Qwen3Model;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The fixture training step (forward, the fixture's policy-gradient loss, adapter-only backward, the
 * parallel gradients completed over NCCL) on one GPU and on two GPUs of this machine, one thread,
 * backend and NCCL communicator per GPU, with tensor parallelism, expert parallelism and both; the
 * Hugging Face qwen3 / qwen3_moe fixtures and their PEFT LoRA adapter (attention q/k/v/o and the
 * experts), routed experts in f32 or INT4 group-32 through the chunked path.
 *
 * <p>The experts run grouped (the default) or one at a time ({@code each}), on one GPU and on the owners alike.
 * <ul>
 *   <li>Exact mode (batch-invariant kernels, f32 activations), as on the CPU's logical ranks
 *       ({@link ParallelTrainingStepTest}): loss within 1e-6 relative, logits and every adapter gradient within
 *       |Δ| ≤ 1e-5·max|ref| + 1e-4·|ref|; with expert parallelism alone and the grouped form (the default) the split
 *       step is the one GPU's bit for bit: each expert sees the same rows in the same order, the router and the
 *       combination run the one GPU's kernels, and a row's products do not depend on how many rows share them. (With
 *       the experts one at a time the one GPU routes on the host and the split on the device: within the tolerance.)
 *       Whether the bits agree is printed for every row.</li>
 *   <li>The default kernels round activations to bf16 on the way into their products, so a sum taken in another
 *       order (tensor parallelism's partial products, a product over fewer rows) flips roundings: loss within 1e-3
 *       relative, logits and every adapter gradient within 2e-2 relative L2 (‖Δ‖/‖ref‖).</li>
 * </ul>
 * The NCCL form needs two GPUs and is skipped, with the reason, on machines with fewer.
 */
class CudaParallelStepTest {
    private static final int WORLD = 2;

    @BeforeAll
    static void needCuda() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
    }

    @ParameterizedTest(name = "{0} on 2 GPUs: tp {1}, ep {2}, exact {3}, experts {4} {5}, recompute {6}")
    @CsvSource({
            "qwen3, 2, 1, false, f32, grouped, false",
            "qwen3, 2, 1, true, f32, grouped, true",
            "qwen3_moe, 1, 2, true, f32, each, false",
            "qwen3_moe, 1, 2, true, f32, grouped, false",
            "qwen3_moe, 1, 2, false, f32, grouped, false",
            "qwen3_moe, 2, 2, true, f32, grouped, true",
            "qwen3_moe, 1, 2, false, int4-g32, grouped, false",
            "qwen3_moe, 2, 2, false, int4-g32, grouped, true",
    })
    void stepOnTwoGpusMatchesOne(String arch, int tp, int ep, boolean exact, String experts, String form, boolean recompute)
            throws Exception {
        int gpus = Cuda.deviceCount();
        assumeTrue(gpus >= WORLD, () -> "the parallel step over NCCL needs " + WORLD + " GPUs; this machine has " + gpus);
        compare(arch, tp, ep, exact, experts, form, recompute, true);
    }

    /**
     * The same comparisons with two logical ranks on GPU 0, each with its own backend (stream and memory), their
     * collectives staged through the host ({@link HostStagedRanks}): the parallel model's device paths on one GPU.
     */
    @ParameterizedTest(name = "{0} on 2 logical ranks of one GPU: tp {1}, ep {2}, exact {3}, experts {4} {5}, recompute {6}")
    @CsvSource({
            "qwen3, 2, 1, false, f32, grouped, false",
            "qwen3, 2, 1, true, f32, grouped, true",
            "qwen3_moe, 1, 2, true, f32, each, true",
            "qwen3_moe, 1, 2, true, f32, grouped, false",
            "qwen3_moe, 1, 2, false, f32, grouped, false",
            "qwen3_moe, 2, 2, true, f32, grouped, false",
            "qwen3_moe, 2, 2, false, int4-g32, grouped, true",
    })
    void stepOnLogicalRanksOfOneGpuMatchesOne(String arch, int tp, int ep, boolean exact, String experts, String form,
                                              boolean recompute) throws Exception {
        compare(arch, tp, ep, exact, experts, form, recompute, false);
    }

    private static void compare(String arch, int tp, int ep, boolean exact, String experts, String form, boolean recompute,
                                boolean nccl) throws Exception {
        ParallelTrainingStepTest.Fixture f = new ParallelTrainingStepTest.Fixture(arch);
        QuantFormat quant = experts.equals("f32") ? null : QuantFormats.byName(experts);
        int chunk = quant == null ? 0 : 2;
        boolean each = form.equals("each");
        boolean bitExact = exact && tp == 1 && !each;
        Consumer<Qwen3Model> tune = m -> m.setGroupedExperts(!each);
        ParallelTrainingStepTest.StepResult one;
        try (CudaBackend gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), exact)) {
            one = f.step(gpu, null, recompute, 0, f.seqs.size(), quant, chunk, tune);
        }
        ParallelLayout layout = new ParallelLayout(WORLD, tp, ep);
        RankBody<ParallelTrainingStepTest.StepResult> body = (comm, gpu) -> {
            var r = f.step(gpu, RankGroups.split(layout, comm), recompute, 0, f.seqs.size(), quant, chunk, tune);
            // the exchanges' buffers are the step's: none outlives it (they were once never freed)
            assertEquals(0, ((org.orbitrl.kernels.cuda.CudaAllocator) gpu.allocator()).liveBytes(
                    org.orbitrl.kernels.MemoryCategory.COMM_BUFFERS), "communication buffers live after the step");
            return r;
        };
        List<ParallelTrainingStepTest.StepResult> ranks = nccl ? onGpus(exact, body) : onOneGpu(exact, body);
        String what = arch + " " + layout + (exact ? " exact" : "") + " experts " + experts + " " + form
                + (nccl ? " NCCL" : " one GPU");
        double worstLogits = 0;
        for (int r = 0; r < WORLD; r++) {
            ParallelTrainingStepTest.StepResult got = ranks.get(r);
            assertEquals(one.loss(), got.loss(), bitExact ? 0 : (exact ? 1e-6 : 1e-3) * Math.abs(one.loss()),
                    what + " GPU " + r + " loss");
            worstLogits = Math.max(worstLogits, close(what + " GPU " + r + " logits", one.logits(), got.logits(), exact, bitExact));
        }
        double worstGrad = 0;
        for (String name : one.grads().keySet()) {
            List<Tensor> blocks = new ArrayList<>();
            for (int t = 0; t < tp; t++) {
                blocks.add(ranks.get(t).grads().get(name));
            }
            worstGrad = Math.max(worstGrad, close(what + " gradient " + name, one.grads().get(name).toFloatArray(),
                    AdapterParallel.gatherTensorParallel(name, blocks).toFloatArray(), exact, bitExact));
        }
        boolean sameBits = one.loss() == ranks.get(0).loss() && java.util.Arrays.equals(one.logits(), ranks.get(0).logits());
        for (String name : one.grads().keySet()) {
            List<Tensor> blocks = new ArrayList<>();
            for (int t = 0; t < tp; t++) {
                blocks.add(ranks.get(t).grads().get(name));
            }
            sameBits &= java.util.Arrays.equals(one.grads().get(name).toFloatArray(),
                    AdapterParallel.gatherTensorParallel(name, blocks).toFloatArray());
        }
        System.out.printf("%s: loss %.9g on one GPU, %.9g on %d; %d adapter gradients; worst %s logits %.3g, gradients %.3g;"
                        + " loss, logits and gradients %s%n", what, one.loss(), ranks.get(0).loss(), WORLD, one.grads().size(),
                exact ? "|err|/max|ref|" : "relative L2", worstLogits, worstGrad, sameBits ? "the same bits" : "not the same bits");
    }

    /** Exact mode: {@link ParallelTrainingStepTest#assertClose}; the default kernels: ‖got − ref‖ / ‖ref‖ ≤ 2e-2. */
    private static double close(String what, float[] ref, float[] got, boolean exact, boolean bitExact) {
        if (exact) {
            return ParallelTrainingStepTest.assertClose(what, ref, got, bitExact);
        }
        assertEquals(ref.length, got.length, what + ": element count");
        double diff = 0;
        double norm = 0;
        for (int i = 0; i < ref.length; i++) {
            diff += ((double) got[i] - ref[i]) * ((double) got[i] - ref[i]);
            norm += (double) ref[i] * ref[i];
        }
        assertTrue(norm > 0, what + ": reference is all zeros");
        double rel = Math.sqrt(diff / norm);
        assertTrue(rel <= 2e-2, what + ": relative L2 difference " + rel + " (limit 2e-2)");
        return rel;
    }

    interface RankBody<T> {
        T run(Communicator comm, CudaBackend gpu) throws Exception;
    }

    /** {@code body} on one thread per logical rank, each with its own backend on GPU 0, collectives staged through the host. */
    static <T> List<T> onOneGpu(boolean exact, RankBody<T> body) throws Exception {
        List<CudaBackend> backends = new ArrayList<>();
        for (int i = 0; i < WORLD; i++) {
            backends.add(new CudaBackend(0, CudaBackend.defaultCacheDir(), exact));
        }
        try {
            return LocalRanks.run(WORLD, c -> {
                CudaBackend gpu = backends.get(c.rank());
                try {
                    return body.run(new HostStagedRanks(c, gpu), gpu);
                } catch (RuntimeException e) {
                    throw e;
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            });
        } finally {
            backends.forEach(CudaBackend::close);
        }
    }

    /** {@code body} on one thread per GPU, each with its backend and its communicator of an {@code ncclCommInitAll} world. */
    static <T> List<T> onGpus(boolean exact, RankBody<T> body) throws Exception {
        List<CudaBackend> backends = new ArrayList<>();
        for (int i = 0; i < WORLD; i++) {
            backends.add(new CudaBackend(i, CudaBackend.defaultCacheDir(), exact));
        }
        List<NcclCommunicator> comms = NcclCommunicator.initAll(backends);
        try {
            return NcclRanks.run(comms, body::run);
        } finally {
            comms.forEach(NcclCommunicator::close);
            backends.forEach(CudaBackend::close);
        }
    }
}
