package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.nn.Weight;

/**
 * An MoE block whose routed experts an expert-parallel group splits ({@link ExpertDispatch}): its router's choice taken
 * on the host for a slice of tokens, the gradient back through that choice, and the experts this rank holds (null where
 * another rank holds one). Qwen3-MoE's {@link SparseMoe} and DeepSeek-V3 / Kimi-K2's {@link DeepseekV3Moe}.
 */
interface ExpertParallelBlock {

    /** A router's choice for N tokens, token-major [N·k]: the experts and their final weights. */
    interface Choice {
        int[] expert();

        float[] weight();

        int topK();
    }

    /** [E] the routed experts, null where another expert-parallel rank holds one. */
    DenseMlp[] experts();

    /** Experts a token is routed to. */
    int topK();

    /** The router's choice for x [n, hidden] (n ≥ 1), read to the host. */
    Choice route(Backend b, Tensor x);

    /** Accumulates into dx [n, hidden] the gradient through the choice's weights (d loss / d weight, token-major). */
    void routerBackward(Backend b, Tensor x, Choice c, float[] dWeight, Tensor dx);

    /** The experts held here grouped in backend memory (ids relative to {@link #ownedFirst}), or null: one at a time. */
    GroupedExperts owned(Backend b);

    int ownedFirst();

    /** The active-expert chunk of quantized experts (0: off). */
    int chunkSize();

    /** Calls {@code body(expert, dense weights or null)} for every expert with rows in {@code groups}. */
    void eachActive(Backend b, ExpertGroups groups, java.util.function.BiConsumer<Integer, Weight[]> body);

    /** The held block of {@code experts} grouped (one contiguous run), or null when none is held, all are, or it has gaps. */
    static GroupedExperts ownedBlock(DenseMlp[] experts) {
        int first = firstHeld(experts);
        int last = -1;
        boolean contiguous = true;
        boolean all = true;
        for (int e = 0; e < experts.length; e++) {
            if (experts[e] != null) {
                contiguous &= last < 0 || last == e - 1;
                last = e;
            } else {
                all = false;
            }
        }
        return first < 0 || all || !contiguous ? null
                : GroupedExperts.of(java.util.Arrays.copyOfRange(experts, first, last + 1), Float.POSITIVE_INFINITY);
    }

    static int firstHeld(DenseMlp[] experts) {
        for (int e = 0; e < experts.length; e++) {
            if (experts[e] != null) {
                return e;
            }
        }
        return -1;
    }
}
