package org.orbitrl.model.parallel;

/**
 * How one model is spread over {@code world} ranks (GPUs, or logical ranks on the CPU):
 * <ul>
 *   <li>tensor parallel {@code tp}: attention heads (query and key/value) and the dense MLP's
 *       intermediate size are split over groups of {@code tp} consecutive ranks; q/k/v/gate/up are
 *       split by output rows (column-parallel), o/down by input columns (row-parallel), and the
 *       partial outputs are summed with an all-reduce;</li>
 *   <li>expert parallel {@code ep}: routed experts are split into {@code ep} contiguous blocks over
 *       groups of {@code ep} consecutive ranks; each rank routes its share of the tokens and
 *       dispatches them to the ranks owning their experts with an all-to-all, and combines the
 *       answers with a second one.</li>
 * </ul>
 * Every rank sees every token of the step (the residual stream, norms, router, embedding and LM
 * head are replicated); data parallelism is a separate layer above (several such groups).
 */
public record ParallelLayout(int world, int tp, int ep) {

    public ParallelLayout {
        if (world < 1 || tp < 1 || ep < 1) {
            throw new IllegalArgumentException("parallel layout: world " + world + ", tp " + tp + ", ep " + ep
                    + " must all be >= 1");
        }
        if (world % tp != 0 || world % ep != 0) {
            throw new IllegalArgumentException("parallel layout: tp " + tp + " and ep " + ep + " must divide the "
                    + world + " ranks");
        }
    }

    /** One rank, nothing split. */
    public static ParallelLayout single() {
        return new ParallelLayout(1, 1, 1);
    }

    public int tpRank(int rank) {
        return rank % tp;
    }

    public int epRank(int rank) {
        return rank % ep;
    }

    /**
     * Throws unless the model's shape splits evenly: query and key/value heads by tp, the dense
     * intermediate size by tp (when the model has dense MLP layers), routed experts by ep.
     */
    public void validate(String model, int heads, int kvHeads, int intermediate, boolean denseMlp, int experts) {
        StringBuilder bad = new StringBuilder();
        if (heads % tp != 0) {
            bad.append("; num_attention_heads ").append(heads).append(" is not divisible by tp ").append(tp);
        }
        if (kvHeads % tp != 0) {
            bad.append("; num_key_value_heads ").append(kvHeads).append(" is not divisible by tp ").append(tp);
        }
        if (denseMlp && intermediate % tp != 0) {
            bad.append("; intermediate_size ").append(intermediate).append(" is not divisible by tp ").append(tp);
        }
        if (ep > 1 && experts == 0) {
            bad.append("; ep ").append(ep).append(" needs routed experts, the model has none");
        } else if (experts > 0 && experts % ep != 0) {
            bad.append("; ").append(experts).append(" routed experts are not divisible by ep ").append(ep);
        }
        if (!bad.isEmpty()) {
            throw new IllegalArgumentException(model + " cannot use " + this + bad);
        }
    }

    /** Experts per expert-parallel rank. */
    public int expertsPerRank(int experts) {
        return experts / ep;
    }

    /** The expert-parallel rank that owns routed expert {@code e}. */
    public int expertOwner(int e, int experts) {
        return e / expertsPerRank(experts);
    }

    @Override
    public String toString() {
        return "parallel layout {world: " + world + ", tp: " + tp + ", ep: " + ep + "}";
    }
}
