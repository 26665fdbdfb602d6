package org.orbitrl.model.adapter;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.comm.LocalRanks;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.DeepseekV3Config;
import org.orbitrl.model.arch.DeepseekV3Model;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.parallel.AdapterParallel;
import org.orbitrl.model.parallel.ParallelLayout;
import org.orbitrl.model.parallel.RankGroups;
import org.orbitrl.model.parallel.ShardedWeights;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek-V3 / Kimi-K2's MoE layers under expert parallelism on logical ranks (threads standing in for GPUs): the
 * Hugging Face deepseek_v3 fixture (8 routed experts, top-2 of 2 groups, a shared expert, a first dense layer) and its
 * PEFT LoRA adapter (the latent attention's projections and the fused experts), the fixture's policy-gradient step on 2
 * and 4 ranks against one rank. Each expert sees the same rows in the same order and each token's sum starts from the
 * shared expert's output as on one rank, so logits and every adapter gradient are one rank's bit for bit; the one-rank
 * step itself matches PEFT's gradients ({@link DeepseekV3LoraFixtureTest}).
 */
class DeepseekV3ExpertParallelTest {

    record Result(float[] logits, Map<String, float[]> grads) {
    }

    private static Result step(RankGroups groups, boolean recompute, boolean grouped) {
        return step(new ScalarBackend(), groups, recompute, grouped);
    }

    /** One rank's step on {@code b} (a GPU rank's: weights, adapter and activations in its memory; results read back). */
    static Result step(Backend b, RankGroups groups, boolean recompute, boolean grouped) {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v3");
        ModelSpec spec = ConfigLoader.load(dir);
        DeepseekV3Config c = DeepseekV3Config.from(spec);
        TensorAllocator a = b.allocator();
        DeepseekV3Model model = DeepseekV3Model.load(c, spec.mla().ropeInterleave(), spec.quantization(),
                new TestSafetensors(dir.resolve("model.safetensors")), b, Qwen3Model.LoadOptions.full(), groups);
        model.setGroupedExperts(grouped);
        var weights = new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors"));
        LoraAdapter adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")), groups == null ? weights
                : new ShardedWeights(weights, groups.layout(), groups.rank(), c.experts()), model,
                a.hostMemory() ? TensorAllocator.heap() : a);
        TestSafetensors ref = new TestSafetensors(dir.resolve("reference_lora.safetensors"));
        List<int[]> seqs = FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors")));
        var tape = model.forwardTrain(seqs, recompute);
        Tensor hostLogits = a.toHost(tape.logits());
        float[] logits = hostLogits.toFloatArray();
        adapter.zeroGrad();
        model.backward(tape, a.upload(MemoryCategory.ACTIVATIONS, FixtureLoss.dLogits(hostLogits, ref, seqs)));
        if (groups != null) {
            AdapterParallel.completeGradients(adapter, groups);
        }
        Map<String, float[]> grads = new LinkedHashMap<>();
        adapter.peftGradients().forEach((k, g) -> grads.put(k, g.toFloatArray()));
        return new Result(logits, grads);
    }

    @ParameterizedTest(name = "ep {0}, recompute {1}, experts grouped {2}")
    @CsvSource({"2, false, true", "4, true, true", "2, true, false"})
    void expertParallelStepIsOneRanksBitForBit(int ep, boolean recompute, boolean grouped) {
        Result one = step(null, recompute, grouped);
        ParallelLayout layout = new ParallelLayout(ep, 1, ep);
        List<Result> ranks = LocalRanks.run(ep, comm -> step(RankGroups.split(layout, comm), recompute, grouped));
        assertTrue(one.grads().keySet().stream().anyMatch(k -> k.contains("experts")), "the adapter trains the experts");
        for (int r = 0; r < ep; r++) {
            Result got = ranks.get(r);
            assertArrayEquals(one.logits(), got.logits(), "rank " + r + " of " + ep + ": logits");
            assertEquals(one.grads().keySet(), got.grads().keySet(), "rank " + r + ": adapter parameters");
            for (var e : one.grads().entrySet()) {
                assertArrayEquals(e.getValue(), got.grads().get(e.getKey()), "rank " + r + " of " + ep + ": " + e.getKey());
            }
        }
    }

    /** Rollout's path: a prefill of two prompts into latent KV caches, then 4 decode steps, on 2 ranks: one rank's logits. */
    @org.junit.jupiter.api.Test
    void expertParallelDecodeIsOneRanksBitForBit() {
        List<float[]> one = decode(null);
        ParallelLayout layout = new ParallelLayout(2, 1, 2);
        List<List<float[]>> ranks = LocalRanks.run(2, comm -> decode(RankGroups.split(layout, comm)));
        for (int r = 0; r < 2; r++) {
            for (int s = 0; s < one.size(); s++) {
                assertArrayEquals(one.get(s), ranks.get(r).get(s), "rank " + r + ", step " + s + ": logits");
            }
        }
    }

    private static List<float[]> decode(RankGroups groups) {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v3");
        ModelSpec spec = ConfigLoader.load(dir);
        DeepseekV3Config c = DeepseekV3Config.from(spec);
        DeepseekV3Model model = DeepseekV3Model.load(c, spec.mla().ropeInterleave(), spec.quantization(),
                new TestSafetensors(dir.resolve("model.safetensors")), new ScalarBackend(), Qwen3Model.LoadOptions.full(), groups);
        var weights = new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors"));
        LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")), groups == null ? weights
                : new ShardedWeights(weights, groups.layout(), groups.rank(), c.experts()), model, TensorAllocator.heap());
        List<int[]> seqs = FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors")));
        int prompt = 6;
        List<org.orbitrl.model.arch.KvCache> caches = List.of(model.newCache(16), model.newCache(16));
        List<org.orbitrl.model.arch.CausalLM.Segment> batch = new java.util.ArrayList<>();
        for (int q = 0; q < 2; q++) {
            batch.add(new org.orbitrl.model.arch.CausalLM.Segment(java.util.Arrays.copyOf(seqs.get(q), prompt), caches.get(q)));
        }
        List<float[]> out = new java.util.ArrayList<>();
        out.add(model.forward(batch).toFloatArray());
        for (int t = 0; t < 4; t++) {
            List<org.orbitrl.model.arch.CausalLM.Segment> step = new java.util.ArrayList<>();
            for (int q = 0; q < 2; q++) {
                step.add(new org.orbitrl.model.arch.CausalLM.Segment(new int[]{seqs.get(q)[prompt + t]}, caches.get(q)));
            }
            out.add(model.forward(step).toFloatArray());
        }
        return out;
    }

    @org.junit.jupiter.api.Test
    void tensorParallelismIsRefusedNamingTheModel() {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v3");
        ModelSpec spec = ConfigLoader.load(dir);
        ParallelLayout layout = new ParallelLayout(2, 2, 1);
        var e = assertThrows(IllegalStateException.class, () -> LocalRanks.run(2, comm -> DeepseekV3Model.load(
                DeepseekV3Config.from(spec), spec.mla().ropeInterleave(), spec.quantization(),
                new TestSafetensors(dir.resolve("model.safetensors")), new ScalarBackend(), Qwen3Model.LoadOptions.full(),
                RankGroups.split(layout, comm))));
        assertTrue(String.valueOf(e.getCause().getMessage()).contains("tensor parallelism is not available"), e.toString());
    }
}
