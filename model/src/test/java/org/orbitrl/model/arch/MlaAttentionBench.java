package org.orbitrl.model.arch;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.OpProfiler;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

/**
 * One DeepSeek-V3 / Kimi-K2 attention layer (multi-head latent attention in the absorbed form) on the GPU, of a
 * {@code config.json}'s shape with random bf16 weights: a training step's forward with its tape and backward over
 * TOKENS tokens (sequences of 512), and decode steps of 1 and 32 sequences over a 512-token cached past each; each the
 * median of 3 runs after one untimed, host clock around a synchronized device, and the decode step of 32 profiled
 * backend call by backend call (every call waited for). It reads only the layer's public form, so the same bench runs
 * against an earlier build of the model module for a before-and-after in one call.
 * Usage: {@code MlaAttentionBench CONFIG_JSON [TOKENS]} (4096 by default).
 */
public final class MlaAttentionBench {
    private static final int CONTEXT = 512;
    private static final int[] DECODE = {1, 32};

    private MlaAttentionBench() {
    }

    public static void main(String[] args) {
        if (!Cuda.available()) {
            System.out.println("MlaAttentionBench: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        DeepseekV3Config c = DeepseekV3Config.from(ConfigLoader.load(Path.of(args[0])));
        int tokens = args.length > 1 ? Integer.parseInt(args[1]) : 4096;
        try (CudaBackend gpu = new CudaBackend()) {
            System.out.println("device: " + gpu.device() + "; " + c.modelType() + " attention, " + c.heads() + " heads");
            run(gpu, c, tokens);
        }
    }

    private static void run(CudaBackend gpu, DeepseekV3Config c, int tokens) {
        TensorAllocator a = gpu.allocator();
        SplittableRandom r = new SplittableRandom(43);
        int h = c.hidden();
        int heads = c.heads();
        Linear q = null;
        Linear qA = null;
        Linear qB = null;
        Tensor qANorm = null;
        if (c.qLoraRank() > 0) {
            qA = linear(gpu, r, "q_a_proj", c.qLoraRank(), h);
            qANorm = ones(gpu, c.qLoraRank());
            qB = linear(gpu, r, "q_b_proj", heads * c.qkHeadDim(), c.qLoraRank());
        } else {
            q = linear(gpu, r, "q_proj", heads * c.qkHeadDim(), h);
        }
        DeepseekV3Attention attn = new DeepseekV3Attention(0, c, q, qA, qB, linear(gpu, r, "kv_a_proj_with_mqa", c.cacheWidth(), h),
                linear(gpu, r, "kv_b_proj", heads * (c.qkNope() + c.vHeadDim()), c.kvLoraRank()),
                linear(gpu, r, "o_proj", h, heads * c.vHeadDim()), qANorm, ones(gpu, c.kvLoraRank()));
        RopeTable rope = RopeTable.of(c.rope(), c.qkRope(), Math.max(c.maxPositions(), CONTEXT + 1), RopeTable.Style.HALF);

        // training: sequences of CONTEXT tokens, forward with its tape and backward
        int seqs = Math.max(1, tokens / CONTEXT);
        int n = seqs * CONTEXT;
        List<CausalLM.Segment> train = new ArrayList<>();
        int[] lengths = new int[seqs];
        int[] pos = new int[n];
        for (int s = 0; s < seqs; s++) {
            train.add(new CausalLM.Segment(new int[CONTEXT], null));
            lengths[s] = CONTEXT;
            for (int i = 0; i < CONTEXT; i++) {
                pos[s * CONTEXT + i] = i;
            }
        }
        Tensor x = gpu.toDevice(random(r, 1f, n, h), MemoryCategory.ACTIVATIONS);
        Tensor dout = gpu.toDevice(random(r, 1e-3f, n, h), MemoryCategory.ACTIVATIONS);
        Tensor positions = gpu.toDevice(Tensor.ofInts(pos, n), MemoryCategory.ACTIVATIONS);
        Tensor out = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);
        Tensor dx = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);
        double trainMs = median(gpu, () -> {
            DeepseekV3Attention.Tape t = new DeepseekV3Attention.Tape();
            attn.forward(gpu, x, positions, train, rope, out, t);
            attn.backward(gpu, t, positions, lengths, rope, dout, dx);
        });
        System.out.printf("training forward + backward, %d tokens (%d x %d): %.2f ms%n", n, seqs, CONTEXT, trainMs);
        double fwdMs = median(gpu, () -> attn.forward(gpu, x, positions, train, rope, out, null));
        System.out.printf("inference forward, %d tokens: %.2f ms%n", n, fwdMs);

        // decode: each sequence with CONTEXT cached tokens, one new token each
        for (int batch : DECODE) {
            List<KvCache> caches = new ArrayList<>();
            Tensor xp = gpu.toDevice(random(r, 1f, CONTEXT, h), MemoryCategory.ACTIVATIONS);
            int[] pp = new int[CONTEXT];
            for (int i = 0; i < CONTEXT; i++) {
                pp[i] = i;
            }
            Tensor posp = gpu.toDevice(Tensor.ofInts(pp, CONTEXT), MemoryCategory.ACTIVATIONS);
            Tensor outp = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, CONTEXT, h);
            for (int s = 0; s < batch; s++) {
                KvCache cache = new KvCache(a, 1, 1, c.cacheWidth(), 0, CONTEXT + 64);
                attn.forward(gpu, xp, posp, List.of(new CausalLM.Segment(new int[CONTEXT], cache)), rope, outp, null);
                cache.advance(CONTEXT);
                caches.add(cache);
            }
            Tensor xd = gpu.toDevice(random(r, 1f, batch, h), MemoryCategory.ACTIVATIONS);
            int[] pd = new int[batch];
            Arrays.fill(pd, CONTEXT);
            Tensor posd = gpu.toDevice(Tensor.ofInts(pd, batch), MemoryCategory.ACTIVATIONS);
            Tensor outd = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, batch, h);
            Runnable step = () -> {
                List<CausalLM.Segment> seg = new ArrayList<>();
                for (KvCache k : caches) {
                    k.truncate(CONTEXT);   // every run decodes the same token at the same place
                    seg.add(new CausalLM.Segment(new int[1], k));
                }
                attn.forward(gpu, xd, posd, seg, rope, outd, null);
            };
            double ms = median(gpu, step);
            System.out.printf("decode step, %d sequences over %d cached tokens each: %.3f ms%n", batch, CONTEXT, ms);
            if (batch == DECODE[DECODE.length - 1]) {
                OpProfiler prof = OpProfiler.wrap(gpu, gpu::synchronize);
                DeepseekV3Attention viaProfiler = attn;
                Runnable profiled = () -> {
                    List<CausalLM.Segment> seg = new ArrayList<>();
                    for (KvCache k : caches) {
                        k.truncate(CONTEXT);
                        seg.add(new CausalLM.Segment(new int[1], k));
                    }
                    viaProfiler.forward(prof.backend(), xd, posd, seg, rope, outd, null);
                };
                profiled.run();
                prof.reset();
                for (int i = 0; i < 5; i++) {
                    profiled.run();
                }
                System.out.println("decode step of " + batch + ", backend calls over 5 runs:\n" + prof.report(10));
            }
        }
    }

    private static double median(CudaBackend gpu, Runnable work) {
        work.run();
        gpu.synchronize();
        double[] t = new double[3];
        for (int i = 0; i < t.length; i++) {
            long t0 = System.nanoTime();
            work.run();
            gpu.synchronize();
            t[i] = (System.nanoTime() - t0) / 1e6;
        }
        Arrays.sort(t);
        return t[1];
    }

    private static Linear linear(CudaBackend gpu, SplittableRandom r, String name, long out, long in) {
        return new Linear(name, Weight.of(gpu.toDevice(random(r, 0.02f * (float) Math.sqrt(3), out, in).to(DType.BF16),
                MemoryCategory.BASE_WEIGHTS)), null);
    }

    private static Tensor ones(CudaBackend gpu, int n) {
        float[] v = new float[n];
        Arrays.fill(v, 1f);
        return gpu.toDevice(Tensor.of(v, n), MemoryCategory.BASE_WEIGHTS);
    }

    private static Tensor random(SplittableRandom r, float half, long... shape) {
        float[] v = new float[Math.toIntExact(Arrays.stream(shape).reduce(1, (p, q) -> p * q))];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) ((r.nextDouble() * 2 - 1) * half);
        }
        return Tensor.of(v, shape);
    }
}
