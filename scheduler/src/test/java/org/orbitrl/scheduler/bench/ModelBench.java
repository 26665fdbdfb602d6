package org.orbitrl.scheduler.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.scheduler.loop.AccountingAllocator;
import org.orbitrl.scheduler.rollout.Completion;
import org.orbitrl.scheduler.rollout.Request;
import org.orbitrl.scheduler.rollout.RolloutEngine;
import org.orbitrl.scheduler.rollout.SamplingParams;
import org.orbitrl.scheduler.sft.TinyMoe;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Model-level CPU throughput, each figure beside a limit measured in the same run:
 * prefill and decode tokens/s of the rollout engine at batch 1, 8 and 64 (decode: weight bytes
 * a step must read over the machine's copy bandwidth), and adapter training tokens/s (forward +
 * adapter-only backward, LoRA r=32 on attention and experts) against the vector-FMA peak, with
 * peak memory by category. Models: the shipped quickstart (INT4 experts) and a wider synthetic
 * Qwen3-MoE (hidden 512, 16 experts top-2, INT4 experts).
 *
 * <p>{@code tools/bench -pl scheduler org.orbitrl.scheduler.bench.ModelBench [repo root]}
 */
public final class ModelBench {
    public static void main(String[] args) throws Exception {
        Path repo = Path.of(args.length > 0 ? args[0] : ".");
        int threads = Runtime.getRuntime().availableProcessors();
        double copy = copyBandwidth();
        double fma = fmaPeak(threads);
        System.out.printf("machine: %d threads, copy %.1f GB/s (read+write), dense f32 matmul (M=256, K=N=1024) %.1f GFLOP/s%n", threads,
                copy / 1e9, fma / 1e9);
        List<Path> models = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            models.add(Path.of(args[i]));           // given model directories (the HF fixtures, say)
        }
        if (models.isEmpty()) {
            Path wide = Files.createTempDirectory("orbit-bench-wide");
            TinyMoe w = new TinyMoe(260, 512, 4, 8, 4, 64, 16, 2, 512, 512);
            w.write(wide, w.randomWeights(1), true);
            models = List.of(repo.resolve("models/quickstart"), wide);
        }
        for (Path model : models) {
            AccountingAllocator mem = new AccountingAllocator();
            try (CpuBackend backend = new CpuBackend(threads, mem); LoadedModel lm = LoadedModel.load(model, backend, BaseFormat.BF16)) {
                long weightBytes = Files.size(model.resolve("model.safetensors"));
                System.out.printf("%n== %s (%s, %d layers, hidden %d): checkpoint %.2f MB%n", model.getFileName(),
                        lm.spec().modelType(), lm.spec().numLayers(), lm.spec().hiddenSize(), weightBytes / 1e6);
                long planned = 0;
                for (int l = 0; l < lm.spec().numLayers(); l++) {
                    planned += org.orbitrl.memory.plan.KvCacheLayout.bytesPerToken(lm.spec(), l, DType.F32);
                }
                long engineKv = new RolloutEngine(lm.model(), null, new RolloutEngine.Options(16, 4, 4, 64), null).kvBytesPerToken();
                System.out.printf("KV cache per token: engine %d B, planner %d B (f32), ratio %.3f%n", engineKv, planned,
                        engineKv / (double) planned);
                decode(lm, weightBytes, copy);
                train(lm, mem, fma);
            }
        }
    }

    static void decode(LoadedModel lm, long weightBytes, double copy) {
        SplittableRandom rnd = new SplittableRandom(3);
        for (int batch : new int[]{1, 8, 64}) {
            int newTokens = 32;
            List<Request> reqs = new ArrayList<>();
            for (int i = 0; i < batch; i++) {
                int[] p = new int[16];
                for (int t = 0; t < p.length; t++) {
                    p[t] = 48 + rnd.nextInt(10);
                }
                reqs.add(Request.of("r" + i, p, new SamplingParams(1f, 1f, 0, 0, newTokens, List.of(), List.of(), i)));
            }
            RolloutEngine warm = new RolloutEngine(lm.model(), null, new RolloutEngine.Options(16, 4096, 256, 8192), null);
            warm.generate(reqs);
            RolloutEngine e = new RolloutEngine(lm.model(), null, new RolloutEngine.Options(16, 4096, 256, 8192), null);
            long t0 = System.nanoTime();
            List<Completion> out = e.generate(reqs);
            double s = (System.nanoTime() - t0) / 1e9;
            long gen = out.stream().mapToLong(c -> c.tokens().length).sum();
            double steps = e.stats().steps();
            // a decode step reads every weight once (an upper bound at batch 1, where only k experts per layer run)
            double limitTokS = batch * copy / 2 / weightBytes;
            System.out.printf("decode batch %3d: %8.1f tok/s (%.2f ms/step); weight-read limit %.0f tok/s; ratio %.3f%n", batch,
                    gen / s, s / steps * 1e3, limitTokS, gen / s / limitTokS);
        }
    }

    static void train(LoadedModel lm, AccountingAllocator mem, double fma) {
        AdapterTargets targets = lm.targets();
        boolean moe = !targets.expertSets().isEmpty();
        AdapterConfig cfg = AdapterConfig.lora(32, 64, moe ? List.of("q_proj", "k_proj", "v_proj", "o_proj")
                        : List.of("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                moe ? List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj") : List.of());
        Adapter a = LoraAdapter.create(cfg, targets, mem, 5);
        for (Adapter.Param p : a.params()) {
            p.value().fill(0.01f);
        }
        Trainable m = (Trainable) lm.model();
        SplittableRandom rnd = new SplittableRandom(9);
        List<int[]> seqs = new ArrayList<>();
        int seqLen = 64;
        for (int i = 0; i < 16; i++) {
            int[] s = new int[seqLen];
            for (int t = 0; t < seqLen; t++) {
                s[t] = rnd.nextInt(256);
            }
            seqs.add(s);
        }
        int v = m.vocabSize();
        long tokens = (long) seqs.size() * seqLen;
        Tensor dLogits = Tensor.allocate(Arena.ofAuto(), DType.F32, tokens, v).fill(1e-4f);
        m.backward(m.forwardTrain(seqs, false), dLogits);   // warm-up
        int reps = 3;
        long t0 = System.nanoTime();
        for (int r = 0; r < reps; r++) {
            a.zeroGrad();
            m.backward(m.forwardTrain(seqs, false), dLogits);
        }
        double s = (System.nanoTime() - t0) / 1e9 / reps;
        var spec = lm.spec();
        double activeParams = activeLinearParams(spec);
        double flops = 4 * activeParams * tokens;   // forward 2·P + activation-gradient backward 2·P, no dW
        System.out.printf("train (fwd + adapter-only bwd, LoRA r=32 attention+experts, %d tokens/step): %.0f tok/s, "
                + "%.2f GFLOP/s = %.3f of the dense matmul%n", tokens, tokens / s, flops / s / 1e9, flops / s / fma);
        StringBuilder sb = new StringBuilder("  peak memory:");
        for (Map.Entry<MemoryCategory, Long> e : mem.peak().entrySet()) {
            if (e.getValue() > 0) {
                sb.append(String.format(" %s %.1f MB;", e.getKey().name().toLowerCase(), e.getValue() / 1e6));
            }
        }
        System.out.println(sb);
    }

    static double activeLinearParams(org.orbitrl.model.spec.ModelSpec s) {
        double h = s.hiddenSize();
        double attn = h * s.numHeads() * s.headDim() * 2 + h * s.numKvHeads() * s.headDim() * 2;
        double moe = s.moe() == null ? 3 * h * s.intermediateSize() : 3 * h * s.moe().moeIntermediateSize() * s.moe().topK()
                + h * s.moe().numExperts();
        return s.numLayers() * (attn + moe) + h * s.vocabSize();
    }

    static double copyBandwidth() {
        long n = 256L << 20;
        MemorySegment a = Arena.ofAuto().allocate(n, 64);
        MemorySegment b = Arena.ofAuto().allocate(n, 64);
        a.fill((byte) 1);
        double best = 0;
        for (int i = 0; i < 5; i++) {
            long t0 = System.nanoTime();
            MemorySegment.copy(a, 0, b, 0, n);
            best = Math.max(best, 2.0 * n / ((System.nanoTime() - t0) / 1e9));
        }
        return best;
    }

    /** The CPU backend's own best dense throughput: f32 matmul, M=256, K=N=1024 (GFLOP/s·1e9). */
    static double fmaPeak(int threads) {
        try (CpuBackend b = new CpuBackend(threads)) {
            SplittableRandom r = new SplittableRandom(1);
            float[] xs = new float[256 * 1024];
            float[] ws = new float[1024 * 1024];
            for (int i = 0; i < xs.length; i++) {
                xs[i] = (float) r.nextDouble();
            }
            for (int i = 0; i < ws.length; i++) {
                ws[i] = (float) r.nextDouble();
            }
            Tensor x = Tensor.of(xs, 256, 1024);
            Tensor w = Tensor.of(ws, 1024, 1024);
            Tensor y = Tensor.allocate(Arena.ofAuto(), DType.F32, 256, 1024);
            double best = 0;
            long end = System.nanoTime() + 3_000_000_000L;
            while (System.nanoTime() < end) {
                long t0 = System.nanoTime();
                b.matmul(x, w, y);
                best = Math.max(best, 2.0 * 256 * 1024 * 1024 / ((System.nanoTime() - t0) / 1e9));
            }
            return best;
        }
    }
}
