package org.orbitrl.memory.plan;

import java.util.ArrayList;
import java.util.List;
import java.util.function.UnaryOperator;
import org.orbitrl.kernels.DType;
import org.orbitrl.model.spec.ModelSpec;

/**
 * What would make a job fit: each candidate change is applied to the request and the job is
 * planned again, so every suggestion states its computed outcome (fits with how much to spare,
 * or how far it is still over).
 */
public final class FitAdvisor {
    private FitAdvisor() {
    }

    /** Candidate changes for {@code plan}, each re-planned; empty if it already fits. */
    public static List<Suggestion> suggest(MemoryPlan plan) {
        List<Suggestion> out = new ArrayList<>();
        if (plan.fits()) {
            return out;
        }
        PlanRequest r = plan.request();
        ModelSpec s = r.spec();
        List<UnaryOperator<PlanRequest>> all = new ArrayList<>();
        List<String> allNames = new ArrayList<>();
        if (!r.recompute()) {
            add(out, r, "recompute activations in backward (--recompute)", x -> x.withRecompute(true));
            all.add(x -> x.withRecompute(true));
            allNames.add("--recompute");
        }
        if (!r.offloadInputs() && !r.node().hostMemory() && r.keptLayers() < s.numLayers()) {
            add(out, r, "keep the recomputed layers' inputs in host memory (--offload-inputs)",
                    x -> x.withRecompute(true).withOffloadedInputs(true));
            all.add(x -> x.withRecompute(true).withOffloadedInputs(true));
            allNames.add("--offload-inputs");
        }
        if (plan.expertChunk() > 1) {
            add(out, r, "dequantize 1 expert at a time (--chunk 1)", x -> x.withExpertChunk(1));
            all.add(x -> x.withExpertChunk(1));
            allNames.add("--chunk 1");
        }
        int maxEp = maxExpertParallel(r);
        if (s.isMoe() && maxEp > r.layout().expertParallel()) {
            ParallelLayout l = new ParallelLayout(maxEp, r.layout().tensorParallel(), r.layout().rolloutGpus(),
                    r.layout().trainGpus());
            add(out, r, "spread experts over " + maxEp + " GPUs (--ep " + maxEp + ")", x -> x.withLayout(l));
            all.add(x -> x.withLayout(new ParallelLayout(maxEp, x.layout().tensorParallel(), x.layout().rolloutGpus(),
                    x.layout().trainGpus())));
            allNames.add("--ep " + maxEp);
        }
        int tp2 = r.layout().tensorParallel() * 2;
        ParallelLayout tpLayout = new ParallelLayout(r.layout().expertParallel(), tp2, r.layout().rolloutGpus(),
                r.layout().trainGpus());
        add(out, r, "split attention, dense MLPs, embedding and head over " + tp2 + " GPUs (--tp " + tp2 + ")",
                x -> x.withLayout(tpLayout));
        if (!r.layout().colocated()) {
            int ep = gcdExperts(s, r.node().gpus());
            add(out, r, "colocate rollout and training on all " + r.node().gpus() + " GPUs, one base copy (--ep " + ep + ")",
                    x -> x.withLayout(ParallelLayout.colocated(ep, r.layout().tensorParallel())));
        }
        if (r.kvDtype() == DType.F32) {   // a job's rollout cache is f32 or bf16 (sampling.kv_cache): fp8 is not offered
            add(out, r, "keep the KV cache in bf16 (--kv-dtype bf16, a job's sampling.kv_cache: bf16)",
                    x -> x.withKvDtype(DType.BF16));
            all.add(x -> x.withKvDtype(DType.BF16));
            allNames.add("--kv-dtype bf16");
        }
        if (r.batch().microBatch() > 1) {
            int m = Math.max(1, plan.maxMicroBatch());
            add(out, r, "train micro-batches of " + m + " (--micro-batch " + m + ")",
                    x -> x.withBatch(x.batch().withMicroBatch(m)));
        }
        if (plan.maxPrompts() > 0 && plan.maxPrompts() < r.batch().prompts()) {
            int p = plan.maxPrompts();
            add(out, r, "generate " + p + " prompts per step instead of " + r.batch().prompts() + " (--prompts " + p + ")",
                    x -> x.withBatch(x.batch().withPrompts(p)));
        }
        if (r.adapter() instanceof AdapterSpec.Lora l) {
            if (l.rank() > 1) {
                AdapterSpec half = new AdapterSpec.Lora(l.rank() / 2, l.targets(), l.modules(), l.dtype());
                add(out, r, "halve the LoRA rank (--adapter " + half + ")", x -> x.withAdapter(half));
            }
            if (l.targets().contains(ParamFamily.ROUTED_EXPERTS) && l.targets().size() > 1) {
                java.util.Set<ParamFamily> t = java.util.EnumSet.copyOf(l.targets());
                t.remove(ParamFamily.ROUTED_EXPERTS);
                AdapterSpec noExperts = new AdapterSpec.Lora(l.rank(), t,
                        l.modules().stream().filter(m -> !AdapterSpec.expertParameter(m)).toList(), l.dtype());
                add(out, r, "leave the routed experts without LoRA (--adapter " + noExperts + ")",
                        x -> x.withAdapter(noExperts));
            }
        }
        if (r.adapter().isFull()) {
            add(out, r, "train a LoRA adapter instead of every parameter, on the native base (--adapter lora:32 --base native)",
                    x -> x.withAdapter(AdapterSpec.parse("lora:32")).withBase(BaseFormat.parse("native", s)));
        } else if (s.isMoe() && !r.base().of(ParamFamily.ROUTED_EXPERTS).isQuantized()) {
            for (String f : List.of("int4", "fp4")) {
                add(out, r, "store the base as " + f + " (--base " + f + ")", x -> x.withBase(BaseFormat.parse(f)));
            }
        }
        if (all.size() > 1) {
            add(out, r, "all of " + String.join(" ", allNames),
                    x -> {
                        PlanRequest y = x;
                        for (UnaryOperator<PlanRequest> op : all) {
                            y = op.apply(y);
                        }
                        return y;
                    });
        }
        for (String n : NodeSpec.PRESETS) {
            NodeSpec node = NodeSpec.parse(n);
            if (node.gpus() >= r.node().gpus() && node.bytesPerGpu() > r.node().bytesPerGpu()) {
                int ep = gcdExperts(s, node.gpus());
                try {
                    ParallelLayout l = r.layout().colocated() ? ParallelLayout.colocated(ep, r.layout().tensorParallel())
                            : ParallelLayout.split(r.layout().expertParallel(), r.layout().tensorParallel(),
                            node.gpus() - node.gpus() / 2, node.gpus() / 2);
                    add(out, r, "run on " + node.name() + " (--node " + node.name() + ")", x -> x.withNode(node, l));
                } catch (IllegalArgumentException e) {
                    // the layout cannot be carried over to that node: no suggestion for it
                    continue;
                }
            }
        }
        return out;
    }

    private static void add(List<Suggestion> out, PlanRequest r, String change, UnaryOperator<PlanRequest> op) {
        PlanRequest changed;
        try {
            changed = op.apply(r);
        } catch (IllegalArgumentException e) {
            return;     // the change is not valid for this model or layout
        }
        WeightInventory inv = WeightInventory.of(changed.spec());
        GpuBudget worst = null;
        for (GpuBudget b : MemoryPlanner.budgets(changed, inv)) {
            if (worst == null || b.headroom() < worst.headroom()) {
                worst = b;
            }
        }
        out.add(new Suggestion(change, worst.fits(), worst.headroom(), worst.overflowCategory()));
    }

    private static int maxExpertParallel(PlanRequest r) {
        int group = r.layout().colocated() ? r.node().gpus() : Math.min(r.layout().rolloutGpus(), r.layout().trainGpus());
        return gcdExperts(r.spec(), group);
    }

    private static int gcdExperts(ModelSpec s, int gpus) {
        if (!s.isMoe()) {
            return 1;
        }
        int a = s.moe().numExperts();
        int b = gpus;
        while (b != 0) {
            int t = a % b;
            a = b;
            b = t;
        }
        return a;
    }
}
