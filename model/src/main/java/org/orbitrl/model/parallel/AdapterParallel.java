package org.orbitrl.model.parallel;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.comm.Communicator;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.LoraAdapter;

import java.util.List;

/**
 * Moving adapters (never base weights) between ranks:
 * <ul>
 *   <li>{@link #completeGradients}: after backward on every rank of one model-parallel group,
 *       turns partial gradients into whole ones. Under tensor parallelism LoRA A of a column-split
 *       layer and LoRA B of a row-split layer receive one partial sum per rank (all-reduced over the
 *       tensor-parallel group); under expert parallelism each rank holds gradients only for the
 *       experts it owns and for the router on its token slice (all-reduced over the
 *       expert-parallel group).</li>
 *   <li>{@link #allReduceGradients}: data-parallel trainer ranks, each over its own samples, sum
 *       their gradients before the optimizer step (the loss is a sum over samples).</li>
 *   <li>{@link #broadcastValues}: a new adapter version from the trainer to every rollout rank.</li>
 * </ul>
 */
public final class AdapterParallel {
    private static final String PREFIX = "base_model.model.";
    private static final java.util.regex.Pattern ONE_EXPERT = java.util.regex.Pattern.compile("\\.experts\\.\\d+\\.");

    private AdapterParallel() {
    }

    /** The module a PEFT parameter name belongs to ({@code ...q_proj} for {@code base_model.model....q_proj.lora_A.weight}). */
    static String module(String param) {
        String n = param.startsWith(PREFIX) ? param.substring(PREFIX.length()) : param;
        for (String s : List.of(".lora_A.weight", ".lora_B.weight")) {
            if (n.endsWith(s)) {
                return n.substring(0, n.length() - s.length());
            }
        }
        return n;
    }

    /** Completes partial gradients within a model-parallel group (collective over its tp and ep groups). */
    public static void completeGradients(Adapter adapter, RankGroups groups) {
        ParallelLayout layout = groups.layout();
        if (layout.tp() > 1 && !(adapter instanceof LoraAdapter)) {
            throw new UnsupportedOperationException(adapter.config().type() + " adapters under tensor parallelism: "
                    + "only LoRA is split across tensor-parallel ranks; use tp 1");
        }
        for (Adapter.Param p : adapter.params()) {
            String module = module(p.name());
            boolean a = p.name().endsWith(".lora_A.weight");
            if (LayerSplit.isExperts(module) || LayerSplit.isRouter(module)) {
                // a fused experts parameter (every rank the same tensor, its experts' parts here) or the router: summed;
                // one expert's own module (experts.N.*) exists on its owner alone, whole there
                if (layout.ep() > 1 && !ONE_EXPERT.matcher(module).find()) {
                    groups.ep().allReduceSum(p.grad());
                }
            } else if (layout.tp() > 1) {
                LayerSplit s = LayerSplit.of(module);
                if ((s == LayerSplit.COLUMN && a) || (s == LayerSplit.ROW && !a)) {
                    groups.tp().allReduceSum(p.grad());
                }
            }
        }
    }

    /** Sums every gradient over the data-parallel ranks of {@code dp} (each rank: the same adapter, its own samples). */
    public static void allReduceGradients(Adapter adapter, Communicator dp) {
        for (Adapter.Param p : adapter.params()) {
            dp.allReduceSum(p.grad());
        }
    }

    /** Every rank's adapter values become {@code root}'s: only the adapter moves, the base stays put. */
    public static void broadcastValues(Adapter adapter, Communicator group, int root) {
        for (Adapter.Param p : adapter.params()) {
            group.broadcast(p.value(), root);
        }
    }

    /** Bytes one adapter publish moves per receiving rank. */
    public static long publishBytes(Adapter adapter) {
        return adapter.params().stream().mapToLong(p -> p.value().byteSize()).sum();
    }

    /**
     * The whole tensor of PEFT parameter {@code name} from the tensor-parallel ranks' blocks, in
     * tensor-parallel rank order (replicated parameters: the first block). For checkpoints and tests.
     */
    public static Tensor gatherTensorParallel(String name, List<Tensor> blocks) {
        int dim = ShardedWeights.splitDim(name.startsWith(PREFIX) ? name : PREFIX + name);
        if (dim < 0 || blocks.size() == 1) {
            return blocks.get(0);
        }
        Tensor first = blocks.get(0);
        long[] shape = first.shape();
        long step = shape[dim];
        shape[dim] *= blocks.size();
        Tensor out = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), first.dtype(), shape);
        for (int i = 0; i < blocks.size(); i++) {
            out.slice(dim, i * step, (i + 1) * step).copyFrom(blocks.get(i));
        }
        return out;
    }
}
