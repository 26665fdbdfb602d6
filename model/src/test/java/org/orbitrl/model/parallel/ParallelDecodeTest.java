package org.orbitrl.model.parallel;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.orbitrl.kernels.comm.LocalRanks;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.arch.Qwen3Model;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Rollout's path under a parallel layout: a batched prefill of two prompts into per-sequence KV
 * caches (each rank caching its share of the key/value heads), then decode steps of one token per
 * sequence, with the fixture LoRA adapter on. Every step's logits on every rank match one rank's
 * (|Δ| ≤ 1e-5·max|ref| + 1e-4·|ref|; bit-identical with expert parallelism alone).
 */
class ParallelDecodeTest {

    @ParameterizedTest(name = "{0} on {1} ranks: tp {2}, ep {3}")
    @CsvSource({"qwen3, 2, 2, 1", "qwen3_moe, 2, 1, 2", "qwen3_moe, 4, 2, 4"})
    void decodeMatchesOneRank(String arch, int world, int tp, int ep) {
        ParallelTrainingStepTest.Fixture f = new ParallelTrainingStepTest.Fixture(arch);
        List<float[]> one = decode(f, null);
        ParallelLayout layout = new ParallelLayout(world, tp, ep);
        List<List<float[]>> ranks = LocalRanks.run(world, c -> decode(f, RankGroups.split(layout, c)));
        for (int r = 0; r < world; r++) {
            assertEquals(one.size(), ranks.get(r).size());
            for (int s = 0; s < one.size(); s++) {
                ParallelTrainingStepTest.assertClose(arch + " " + layout + " rank " + r + " step " + s + " logits",
                        one.get(s), ranks.get(r).get(s), tp == 1);
            }
        }
    }

    /** Logits of the prefill (6 tokens of each of two sequences) and of 4 decode steps. */
    private static List<float[]> decode(ParallelTrainingStepTest.Fixture f, RankGroups groups) {
        Qwen3Model model = Qwen3Model.load(f.config, f.weights, new ScalarBackend(), Qwen3Model.LoadOptions.full(), groups);
        LoraAdapter.load(f.adapterConfig, groups == null ? f.adapterWeights
                : new ShardedWeights(f.adapterWeights, groups.layout(), groups.rank(), f.config.experts()), model,
                TensorAllocator.heap());
        int prompt = 6;
        List<KvCache> caches = List.of(model.newCache(16), model.newCache(16));
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int b = 0; b < 2; b++) {
            batch.add(new CausalLM.Segment(Arrays.copyOf(f.seqs.get(b), prompt), caches.get(b)));
        }
        List<float[]> out = new ArrayList<>();
        out.add(model.forward(batch).toFloatArray());
        for (int t = 0; t < 4; t++) {
            List<CausalLM.Segment> step = new ArrayList<>();
            for (int b = 0; b < 2; b++) {
                step.add(new CausalLM.Segment(new int[]{f.seqs.get(b)[prompt + t]}, caches.get(b)));
            }
            out.add(model.forward(step).toFloatArray());
        }
        return out;
    }
}
