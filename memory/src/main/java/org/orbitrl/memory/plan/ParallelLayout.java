package org.orbitrl.memory.plan;

import java.util.List;
import org.orbitrl.model.spec.ModelSpec;

/**
 * How a job spreads over the node's GPUs. Either every GPU both generates and trains (colocated,
 * one copy of the base), or the node is split into {@code rolloutGpus} generating and
 * {@code trainGpus} training GPUs, each group holding its own copy of the base. Within a group,
 * routed experts are spread over {@code expertParallel} GPUs (each holds {@code E/ep} experts of
 * every MoE layer; the group holds {@code group/ep} replicas), and attention, dense MLPs, the
 * embedding and the head over {@code tensorParallel} GPUs; the remaining factor
 * {@code group/tp} is data parallelism: each data-parallel rank handles its share of the
 * sequences.
 *
 * @param expertParallel expert-parallel size (1 for a dense model)
 * @param tensorParallel tensor-parallel size
 * @param rolloutGpus    GPUs that only generate; 0 when colocated
 * @param trainGpus      GPUs that only train; 0 when colocated
 */
public record ParallelLayout(int expertParallel, int tensorParallel, int rolloutGpus, int trainGpus) {

    public ParallelLayout {
        if (expertParallel <= 0 || tensorParallel <= 0) {
            throw new IllegalArgumentException("expert-parallel size " + expertParallel + " and tensor-parallel size "
                    + tensorParallel + " must be positive");
        }
        if (rolloutGpus < 0 || trainGpus < 0 || (rolloutGpus == 0) != (trainGpus == 0)) {
            throw new IllegalArgumentException("a split layout needs at least one rollout and one training GPU, got "
                    + rolloutGpus + ":" + trainGpus);
        }
    }

    /** Every GPU generates and trains. */
    public static ParallelLayout colocated(int ep, int tp) {
        return new ParallelLayout(ep, tp, 0, 0);
    }

    /** {@code rollout} GPUs generate and {@code train} GPUs train, each group with its own base. */
    public static ParallelLayout split(int ep, int tp, int rollout, int train) {
        return new ParallelLayout(ep, tp, rollout, train);
    }

    /**
     * The default for a model on a node: colocated, tensor-parallel 1, experts spread over as many
     * GPUs as divide both the group and the expert count.
     */
    public static ParallelLayout auto(ModelSpec spec, NodeSpec node, int rollout, int train) {
        int group = rollout == 0 ? node.gpus() : Math.min(rollout, train);
        int ep = spec.moe() == null ? 1 : gcd(spec.moe().numExperts(), group);
        return new ParallelLayout(ep, 1, rollout, train);
    }

    public boolean colocated() {
        return rolloutGpus == 0;
    }

    /** The roles this layout gives GPUs: one when colocated, rollout and training when split. */
    public List<GpuRole> roles() {
        return colocated() ? List.of(GpuRole.COLOCATED) : List.of(GpuRole.ROLLOUT, GpuRole.TRAIN);
    }

    /** GPUs in the group of {@code role}. */
    public int groupSize(GpuRole role, NodeSpec node) {
        return switch (role) {
            case COLOCATED -> node.gpus();
            case ROLLOUT -> rolloutGpus;
            case TRAIN -> trainGpus;
        };
    }

    /** Data-parallel ranks in the group of {@code role}. */
    public int dataParallel(GpuRole role, NodeSpec node) {
        return groupSize(role, node) / tensorParallel;
    }

    /** Throws, naming the problem, unless this layout can run {@code spec} on {@code node}. */
    public void validate(ModelSpec spec, NodeSpec node) {
        if (!colocated() && rolloutGpus + trainGpus != node.gpus()) {
            throw new IllegalArgumentException("split " + rolloutGpus + ":" + trainGpus + " uses "
                    + (rolloutGpus + trainGpus) + " GPUs but the node " + node.name() + " has " + node.gpus());
        }
        if (spec.moe() == null && expertParallel != 1) {
            throw new IllegalArgumentException(spec.modelType() + " has no experts; expert-parallel size must be 1, not "
                    + expertParallel);
        }
        if (spec.moe() != null && spec.moe().numExperts() % expertParallel != 0) {
            throw new IllegalArgumentException("the " + spec.moe().numExperts() + " experts per layer cannot be split evenly over "
                    + expertParallel + " expert-parallel GPUs (sizes that divide " + spec.moe().numExperts() + ": "
                    + divisors(spec.moe().numExperts(), node.gpus()) + ")");
        }
        if (spec.mla() != null && tensorParallel > 1) {   // as the runtime: the latent attention is not split
            throw new IllegalArgumentException(spec.modelType() + ": tensor parallelism is not available for the latent"
                    + " attention models (tensor-parallel size " + tensorParallel + "); split the routed experts with expert"
                    + " parallelism");
        }
        if (spec.numHeads() % tensorParallel != 0) {
            throw new IllegalArgumentException("tensor-parallel size " + tensorParallel + " does not divide the "
                    + spec.numHeads() + " attention heads");
        }
        int kvh = spec.numKvHeads();
        if (kvh % tensorParallel != 0 && tensorParallel % kvh != 0) {
            throw new IllegalArgumentException("tensor-parallel size " + tensorParallel + " neither divides nor is a multiple of the "
                    + kvh + " key/value heads");
        }
        for (GpuRole role : roles()) {
            int g = groupSize(role, node);
            String what = colocated() ? "the node's " + g + " GPUs" : "the " + g + " " + role.label() + " GPUs";
            if (g % expertParallel != 0) {
                throw new IllegalArgumentException("expert-parallel size " + expertParallel + " does not divide " + what);
            }
            if (g % tensorParallel != 0) {
                throw new IllegalArgumentException("tensor-parallel size " + tensorParallel + " does not divide " + what);
            }
        }
    }

    private static List<Integer> divisors(int n, int max) {
        return java.util.stream.IntStream.rangeClosed(1, max).filter(d -> n % d == 0).boxed().toList();
    }

    private static int gcd(int a, int b) {
        return b == 0 ? a : gcd(b, a % b);
    }

    @Override
    public String toString() {
        return (colocated() ? "colocated" : "split " + rolloutGpus + " rollout : " + trainGpus + " train")
                + ", EP " + expertParallel + ", TP " + tensorParallel;
    }
}
