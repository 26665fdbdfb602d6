package org.orbitrl.model.parallel;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.comm.Communicator;
import org.orbitrl.kernels.comm.LocalRanks;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.Qwen3Model;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Data parallelism and adapter publishing with logical ranks on the qwen3_moe fixture:
 * trainer ranks that each run their own rows of the batch and all-reduce the adapter gradients get
 * the whole batch's gradients (|Δ| ≤ 1e-5·max|ref| + 1e-4·|ref|: two partial sums added instead of
 * one), also when each data-parallel replica is itself expert-parallel; and a broadcast adapter
 * version makes every rollout rank compute the trainer's logits bit for bit.
 */
class DataParallelAdapterTest {

    @Test
    void dataParallelGradientsAddUpToTheWholeBatch() {
        ParallelTrainingStepTest.Fixture f = new ParallelTrainingStepTest.Fixture("qwen3_moe");
        int rows = f.seqs.size();
        assertTrue(rows >= 2, "the fixture batch has at least two rows");
        ParallelTrainingStepTest.StepResult whole = f.step(null, false, 0, rows);
        // 2 replicas x (ep 2): world ranks {0,1} and {2,3} are the replicas, {0,2} and {1,3} the dp groups
        List<ParallelTrainingStepTest.StepResult> ranks = LocalRanks.run(4, c -> {
            Communicator model = c.split(c.rank() / 2);
            Communicator dp = c.split(c.rank() % 2);
            RankGroups groups = RankGroups.split(new ParallelLayout(2, 1, 2), model);
            int replica = c.rank() / 2;
            int first = replica * (rows / 2);
            int count = replica == 0 ? rows / 2 : rows - rows / 2;
            ParallelTrainingStepTest.StepResult r = f.step(groups, false, first, count);
            for (Tensor g : r.grads().values()) {
                dp.allReduceSum(g);
            }
            return r;
        });
        double loss = ranks.get(0).loss() + ranks.get(2).loss();
        assertEquals(whole.loss(), loss, 1e-6 * Math.abs(whole.loss()), "sum of the replicas' losses");
        for (String name : whole.grads().keySet()) {
            for (int r = 0; r < 4; r++) {
                ParallelTrainingStepTest.assertClose("rank " + r + " gradient " + name,
                        whole.grads().get(name).toFloatArray(), ranks.get(r).grads().get(name).toFloatArray(), false);
            }
        }
    }

    /** Rank 0 trains (here: one SGD step on its gradients), then publishes; ranks 1..3 roll out. */
    @Test
    void aBroadcastAdapterVersionGivesRolloutRanksTheTrainersLogits() {
        ParallelTrainingStepTest.Fixture f = new ParallelTrainingStepTest.Fixture("qwen3_moe");
        List<int[]> prompt = List.of(f.seqs.get(0));
        List<float[]> logits = LocalRanks.run(4, c -> {
            Qwen3Model model = Qwen3Model.load(f.config, f.weights, new ScalarBackend(), Qwen3Model.LoadOptions.full());
            LoraAdapter adapter = LoraAdapter.load(f.adapterConfig, f.adapterWeights, model, TensorAllocator.heap());
            if (c.rank() == 0) {
                var tape = model.forwardTrain(f.seqs, false);
                double denom = StepLoss.denominator(f.ref, f.seqs.size(), f.seqs.get(0).length);
                adapter.zeroGrad();
                model.backward(tape, StepLoss.of(tape.logits(), f.ref, f.seqs, 0, denom).dLogits);
                for (Adapter.Param p : adapter.params()) {
                    float[] v = p.value().toFloatArray();
                    float[] g = p.grad().toFloatArray();
                    for (int i = 0; i < v.length; i++) {
                        v[i] -= 10f * g[i];
                    }
                    p.value().copyFrom(Tensor.of(v, p.value().shape()));
                }
            }
            float[] before = model.forwardTrain(prompt, false).logits().toFloatArray();
            AdapterParallel.broadcastValues(adapter, c, 0);
            float[] after = model.forwardTrain(prompt, false).logits().toFloatArray();
            return c.rank() == 0 ? before : (java.util.Arrays.equals(before, after) ? null : after);
        });
        for (int r = 1; r < 4; r++) {
            assertTrue(logits.get(r) != null, "rank " + r + " logits changed with the new version");
            assertArrayEquals(logits.get(0), logits.get(r), 0f, "rank " + r + " logits after the publish");
        }
        List<Long> bytes = new ArrayList<>();
        Qwen3Model m = Qwen3Model.load(f.config, f.weights, new ScalarBackend(), Qwen3Model.LoadOptions.full());
        bytes.add(AdapterParallel.publishBytes(LoraAdapter.load(f.adapterConfig, f.adapterWeights, m, TensorAllocator.heap())));
        assertTrue(bytes.get(0) > 0 && bytes.get(0) < 1 << 20, "an adapter publish moves " + bytes.get(0) + " bytes");
    }

}
