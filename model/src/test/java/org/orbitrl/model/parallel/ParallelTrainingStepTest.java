package org.orbitrl.model.parallel;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.comm.LocalRanks;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.nn.WeightSource;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The same training step (forward, the fixture's policy-gradient loss, adapter-only backward) on
 * one rank and on 2 and 4 logical ranks with tensor parallelism, expert parallelism and both,
 * using the Hugging Face qwen3 / qwen3_moe fixtures and their PEFT LoRA adapter (attention
 * q/k/v/o and the fused experts). Loss within 1e-6 relative; logits and every adapter gradient
 * (the tensor-parallel blocks put back together) within |Δ| ≤ 1e-5·max|ref| + 1e-4·|ref|: tensor
 * parallelism adds the same terms in another order (all-reduce of partial products), nothing else.
 * Expert parallelism alone keeps every sum's order (see ExpertDispatch), so with tp 1 the results
 * must be bit-identical to one rank's.
 */
class ParallelTrainingStepTest {

    record StepResult(double loss, float[] logits, Map<String, Tensor> grads, int tpRank) {
    }

    static final class Fixture {
        final String arch;
        final DecoderConfig config;
        final WeightSource weights;
        final AdapterConfig adapterConfig;
        final WeightSource adapterWeights;
        final TestSafetensors ref;
        final List<int[]> seqs;

        Fixture(String arch) {
            this.arch = arch;
            Path dir = TestSafetensors.fixtures().resolve(arch);
            this.config = Qwen3FixtureTest.config(arch);
            this.weights = new TestSafetensors(dir.resolve("model.safetensors"));
            this.adapterConfig = AdapterConfig.read(dir.resolve("adapter"));
            this.adapterWeights = new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors"));
            this.ref = new TestSafetensors(dir.resolve("reference_lora.safetensors"));
            Tensor ids = new TestSafetensors(dir.resolve("reference.safetensors")).get("input_ids");
            this.seqs = new ArrayList<>();
            for (int b = 0; b < ids.size(0); b++) {
                int[] s = new int[ids.size(1)];
                for (int t = 0; t < s.length; t++) {
                    s[t] = (int) ids.getLong(b, t);
                }
                seqs.add(s);
            }
        }

        /** One rank's step on {@code seqs[first, first+count)}; groups null = the whole model on one rank. */
        StepResult step(RankGroups groups, boolean recompute, int first, int count) {
            return step(groups, recompute, first, count, null, 0);
        }

        /** As above with routed experts quantized on load to {@code quant} and run in chunks of {@code chunk} (0: fused). */
        StepResult step(RankGroups groups, boolean recompute, int first, int count, QuantFormat quant, int chunk) {
            return step(new ScalarBackend(), groups, recompute, first, count, quant, chunk);
        }

        /**
         * As above on backend {@code b} (a GPU rank's, with an NCCL world under {@code groups}): the adapter in the
         * backend's memory, logits and gradients read back to the host.
         */
        StepResult step(Backend b, RankGroups groups, boolean recompute, int first, int count, QuantFormat quant, int chunk) {
            return step(b, groups, recompute, first, count, quant, chunk, m -> { });
        }

        /** As above, {@code tune} applied to the model before the step (the experts' form, say). */
        StepResult step(Backend b, RankGroups groups, boolean recompute, int first, int count, QuantFormat quant, int chunk,
                        java.util.function.Consumer<Qwen3Model> tune) {
            TensorAllocator a = b.allocator();
            Qwen3Model.LoadOptions options = quant == null ? Qwen3Model.LoadOptions.full()
                    : new Qwen3Model.LoadOptions(w -> Weight.of(quant.quantize(w)));
            Qwen3Model model = Qwen3Model.load(config, weights, b, options, groups);
            model.setExpertChunk(chunk);
            tune.accept(model);
            WeightSource aw = groups == null ? adapterWeights
                    : new ShardedWeights(adapterWeights, groups.layout(), groups.rank(), config.experts());
            LoraAdapter adapter = LoraAdapter.load(adapterConfig, aw, model, a.hostMemory() ? TensorAllocator.heap() : a);
            List<int[]> mine = seqs.subList(first, first + count);
            var tape = model.forwardTrain(mine, recompute);
            double denom = StepLoss.denominator(ref, seqs.size(), seqs.get(0).length);
            Tensor logits = a.toHost(tape.logits());
            StepLoss loss = StepLoss.of(logits, ref, mine, first, denom);
            adapter.zeroGrad();
            model.backward(tape, a.upload(MemoryCategory.ACTIVATIONS, loss.dLogits));
            if (groups != null) {
                AdapterParallel.completeGradients(adapter, groups);
            }
            Map<String, Tensor> grads = new LinkedHashMap<>();
            adapter.params().forEach(p -> grads.put(p.name(), a.toHost(p.grad())));
            return new StepResult(loss.loss, logits.toFloatArray(), grads, groups == null ? 0 : groups.tpRank());
        }
    }

    @ParameterizedTest(name = "{0} on {1} ranks: tp {2}, ep {3}, recompute {4}")
    @CsvSource({
            "qwen3, 2, 2, 1, false",
            "qwen3, 4, 2, 1, true",
            "qwen3_moe, 2, 1, 2, false",
            "qwen3_moe, 2, 2, 2, true",
            "qwen3_moe, 4, 1, 4, false",
            "qwen3_moe, 4, 2, 2, false",
    })
    void parallelStepMatchesOneRank(String arch, int world, int tp, int ep, boolean recompute) {
        Fixture f = new Fixture(arch);
        StepResult one = f.step(null, recompute, 0, f.seqs.size());
        ParallelLayout layout = new ParallelLayout(world, tp, ep);
        List<StepResult> ranks = LocalRanks.run(world, c -> f.step(RankGroups.split(layout, c), recompute, 0, f.seqs.size()));
        String what = arch + " " + layout;
        boolean exact = tp == 1;
        double worstLogits = 0;
        double worstGrad = 0;
        for (int r = 0; r < world; r++) {
            StepResult got = ranks.get(r);
            assertEquals(one.loss, got.loss, exact ? 0 : 1e-6 * Math.abs(one.loss), what + " rank " + r + " loss");
            worstLogits = Math.max(worstLogits, assertClose(what + " rank " + r + " logits", one.logits, got.logits, exact));
        }
        int checked = 0;
        for (String name : one.grads.keySet()) {
            for (int g = 0; g < world / tp; g++) {   // every tensor-parallel group has the whole gradient
                List<Tensor> blocks = new ArrayList<>();
                for (int t = 0; t < tp; t++) {
                    blocks.add(ranks.get(g * tp + t).grads.get(name));
                }
                Tensor whole = AdapterParallel.gatherTensorParallel(name, blocks);
                worstGrad = Math.max(worstGrad, assertClose(what + " tp group " + g + " gradient " + name,
                        one.grads.get(name).toFloatArray(), whole.toFloatArray(), exact));
            }
            checked++;
        }
        assertTrue(checked >= 8, "adapter gradients compared: " + checked);
        System.out.printf("%s: loss %.9g on one rank, %.9g on %d ranks; %d adapter gradients; worst |err|/max|ref| "
                + "logits %.3g, gradients %.3g%n", what, one.loss, ranks.get(0).loss, world, checked, worstLogits, worstGrad);
    }

    /**
     * INT4 group-32 experts through the active-expert-chunked path (2 experts a chunk), as the
     * real models run: expert parallelism alone is bit-identical to one rank, with tensor
     * parallelism within the tolerance above.
     */
    @ParameterizedTest(name = "int4 experts, chunk 2, on {0} ranks: tp {1}, ep {2}")
    @CsvSource({"2, 1, 2", "4, 2, 4"})
    void quantizedChunkedExpertsMatchOneRank(int world, int tp, int ep) {
        Fixture f = new Fixture("qwen3_moe");
        QuantFormat int4 = QuantFormats.byName("int4-g32");
        StepResult one = f.step(null, false, 0, f.seqs.size(), int4, 2);
        ParallelLayout layout = new ParallelLayout(world, tp, ep);
        List<StepResult> ranks = LocalRanks.run(world,
                c -> f.step(RankGroups.split(layout, c), false, 0, f.seqs.size(), int4, 2));
        boolean exact = tp == 1;
        assertEquals(one.loss, ranks.get(0).loss, exact ? 0 : 1e-6 * Math.abs(one.loss), "loss");
        for (String name : one.grads.keySet()) {
            List<Tensor> blocks = new ArrayList<>();
            for (int t = 0; t < tp; t++) {
                blocks.add(ranks.get(t).grads.get(name));
            }
            assertClose(layout + " int4 gradient " + name, one.grads.get(name).toFloatArray(),
                    AdapterParallel.gatherTensorParallel(name, blocks).toFloatArray(), exact);
        }
    }

    /** |got − ref| ≤ 1e-5·max|ref| + 1e-4·|ref| elementwise (0 when exact); the first mismatches are printed. */
    static double assertClose(String what, float[] ref, float[] got, boolean exact) {
        assertEquals(ref.length, got.length, what + ": element count");
        double scale = 0;
        for (float v : ref) {
            scale = Math.max(scale, Math.abs(v));
        }
        assertTrue(scale > 0, what + ": reference is all zeros");
        StringBuilder sb = new StringBuilder();
        int bad = 0;
        double worst = 0;
        for (int i = 0; i < ref.length; i++) {
            double err = Math.abs((double) got[i] - ref[i]);
            double tol = exact ? 0 : 1e-5 * scale + 1e-4 * Math.abs(ref[i]);
            worst = Math.max(worst, err / scale);
            if (!(err <= tol)) {
                if (bad < 8) {
                    sb.append(String.format("%n  [%d] ref %.9g got %.9g err %.3g tol %.3g", i, ref[i], got[i], err, tol));
                }
                bad++;
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + ref.length + " elements outside tolerance (worst |err|/max|ref| " + worst
                    + ")" + sb);
        }
        return worst;
    }
}
