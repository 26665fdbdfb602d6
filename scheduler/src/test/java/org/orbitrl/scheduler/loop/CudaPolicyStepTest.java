package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.checkpoint.Checkpoint;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.scheduler.log.FinishReason;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.log.SampleTimings;
import org.orbitrl.scheduler.rl.AdamW;
import org.orbitrl.scheduler.rl.AdamWConfig;
import org.orbitrl.scheduler.rl.GrpoAdvantage;
import org.orbitrl.scheduler.rl.KlEstimator;
import org.orbitrl.scheduler.rl.KlPenalty;
import org.orbitrl.scheduler.rl.LearningRateSchedule;
import org.orbitrl.scheduler.rl.LossNormalisation;
import org.orbitrl.scheduler.rl.Parameter;
import org.orbitrl.scheduler.rl.PpoClipLoss;
import org.orbitrl.scheduler.rl.TrainingLoss;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * One RL step (PolicyTrainer: training prefill, per-token log-probs, PPO-clip loss with truncated
 * importance sampling and a K3 KL term to the base, backward into the fixture's LoRA adapter, one
 * AdamW step) on the CPU backend and on the CUDA backend in exact mode, from the same samples: the
 * loss, the train/rollout gap and the gradient norm agree within 1e-5 + 1e-4·|cpu|, every adapter
 * gradient within 1e-4 relative L2, and the parameters after the step within
 * 1e-6 + lr·(1e-3 + 2·|Δg|/(|g| + 1e-8)) per element (the first AdamW update is lr·g/(|g| + eps)
 * up to clipping, so it moves by at most that much when g moves by Δg). Skipped where no CUDA device is present.
 */
class CudaPolicyStepTest {
    private static final double LR = 1e-3;
    private static CudaBackend gpu;

    @BeforeAll
    static void open() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), true);
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
        }
    }

    private record Run(PolicyTrainer.Outcome outcome, Map<String, float[]> grads, Map<String, float[]> params) {
    }

    private static Run step(String arch, Backend backend, boolean device, List<SampleRecord> samples) {
        Path dir = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf", arch);
        try (Checkpoint weights = Checkpoint.open(dir.resolve("model.safetensors"));
             Checkpoint adapterFile = Checkpoint.open(dir.resolve("adapter/adapter_model.safetensors"))) {
            Qwen3Model model = Qwen3Model.load(DecoderConfig.from(ConfigLoader.load(dir)), weights, backend,
                    Qwen3Model.LoadOptions.full());
            TensorAllocator alloc = device ? backend.allocator() : TensorAllocator.heap();
            LoraAdapter adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")), adapterFile, model, alloc);
            List<Parameter> params = new ArrayList<>();
            for (Adapter.Param p : adapter.params()) {
                params.add(new Parameter(p.name(), p.value()));
            }
            AdamWConfig cfg = new AdamWConfig(0.9, 0.999, 1e-8, 0.01, 1.0);
            AdamW adamw = device ? new AdamW(cfg, LearningRateSchedule.constant(LR), params, backend)
                    : new AdamW(cfg, LearningRateSchedule.constant(LR), params, alloc);
            PolicyTrainer trainer = new PolicyTrainer(model, adapter, adamw, GrpoAdvantage.standard(),
                    new TrainingLoss(new PpoClipLoss(0.2, 0.28), new KlPenalty(KlEstimator.K3, 0.05)),
                    LossNormalisation.TOKEN_MEAN, 1, 2.0, 2, false, 0.9f);
            PolicyTrainer.Outcome o = trainer.train(samples, 2);
            Map<String, float[]> grads = new java.util.LinkedHashMap<>();
            adapter.peftGradients().forEach((k, g) -> grads.put(k, g.toFloatArray()));
            Map<String, float[]> values = new java.util.LinkedHashMap<>();
            adapter.peftTensors().forEach((k, v) -> values.put(k, v.toFloatArray()));
            return new Run(o, grads, values);
        }
    }

    /** Two groups of two samples over the fixture's tokens, ragged responses, some tokens masked. */
    private static List<SampleRecord> samples(Path dir) {
        try (Checkpoint ref = Checkpoint.open(dir.resolve("reference.safetensors"))) {
            long[] ids = ref.tensor("input_ids").toLongArray(); // [2, 24]
            SplittableRandom r = new SplittableRandom(7);
            List<SampleRecord> out = new ArrayList<>();
            for (int g = 0; g < 2; g++) {
                for (int i = 0; i < 2; i++) {
                    int row = (g + i) % 2;
                    int promptLen = 6 + 2 * g;
                    int respLen = 9 + 4 * i;
                    int[] prompt = new int[promptLen];
                    int[] resp = new int[respLen];
                    for (int t = 0; t < promptLen; t++) {
                        prompt[t] = (int) ids[row * 24 + t];
                    }
                    float[] lp = new float[respLen];
                    boolean[] mask = new boolean[respLen];
                    for (int t = 0; t < respLen; t++) {
                        resp[t] = (int) ids[row * 24 + promptLen + t];
                        lp[t] = (float) (-0.5 - 5 * r.nextDouble());
                        mask[t] = t % 5 != 3;
                    }
                    out.add(SampleRecord.builder().job("j").promptId("p" + g).group(g, i, 2).promptTokens(prompt)
                            .response(resp, lp, mask).version(0).reward(i == 0 ? 1.0 : 0.25, Map.of())
                            .finishReason(FinishReason.LENGTH).temperature(0.9f).timings(new SampleTimings(1000, 2000, 0)).build());
                }
            }
            return out;
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void oneStepOnCpuAndGpuAgrees(String arch) {
        Path dir = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf", arch);
        List<SampleRecord> samples = samples(dir);
        Run cpu;
        try (CpuBackend host = new CpuBackend(2)) {
            cpu = step(arch, host, false, samples);
        }
        Run dev = step(arch, gpu, true, samples);
        PolicyTrainer.Outcome a = cpu.outcome();
        PolicyTrainer.Outcome b = dev.outcome();
        assertFalse(a.skipped(), "cpu step skipped: " + a.skipReason());
        assertFalse(b.skipped(), "gpu step skipped: " + b.skipReason());
        assertTrue(Math.abs(a.loss()) > 1e-6, "the loss is not trivially zero: " + a.loss());
        close(arch + " loss", a.loss(), b.loss());
        close(arch + " mean train/rollout gap", a.gapMean(), b.gapMean());
        close(arch + " gradient norm", a.gradNorm(), b.gradNorm());
        close(arch + " KL", a.klMean(), b.klMean());
        assertEquals(a.tokens(), b.tokens(), arch + " tokens in the loss");
        for (var e : cpu.grads().entrySet()) {
            float[] ref = e.getValue();
            float[] got = dev.grads().get(e.getKey());
            double diff = 0;
            double norm = 0;
            for (int i = 0; i < ref.length; i++) {
                diff += (got[i] - ref[i]) * (double) (got[i] - ref[i]);
                norm += ref[i] * (double) ref[i];
            }
            assertTrue(norm > 0, e.getKey() + ": cpu gradient is zero");
            assertTrue(Math.sqrt(diff / norm) < 1e-4, arch + " " + e.getKey() + ": gpu gradient off by "
                    + Math.sqrt(diff / norm) + " relative (limit 1e-4)");
        }
        for (var e : cpu.params().entrySet()) {
            float[] ref = e.getValue();
            float[] got = dev.params().get(e.getKey());
            float[] gc = cpu.grads().get(e.getKey());
            float[] gg = dev.grads().get(e.getKey());
            for (int i = 0; i < ref.length; i++) {
                // the first update is lr·g/(|g| + eps) up to clipping: its sensitivity to g is lr/(|g| + eps)
                double tol = 1e-6 + LR * (1e-3 + 2 * Math.abs(gc[i] - gg[i]) / (Math.abs(gc[i]) + 1e-8));
                assertTrue(Math.abs(got[i] - ref[i]) <= tol, arch + " " + e.getKey() + "[" + i + "] after the step: cpu "
                        + ref[i] + " gpu " + got[i] + " (tolerance " + tol + ")");
            }
        }
    }

    private static void close(String what, double cpu, double gpu) {
        double tol = 1e-5 + 1e-4 * Math.abs(cpu);
        assertTrue(Math.abs(cpu - gpu) <= tol, what + ": cpu " + cpu + " gpu " + gpu + " (tolerance " + tol + ")");
    }
}
