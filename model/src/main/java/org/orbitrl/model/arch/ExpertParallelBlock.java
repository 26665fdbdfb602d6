package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.model.nn.Weight;

/**
 * An MoE block whose routed experts an expert-parallel group splits ({@link ExpertDispatch}): its router (the one its
 * grouped form routes with, on the backend) and the experts this rank holds (null where another rank holds one).
 * Qwen3-MoE's {@link SparseMoe} and DeepSeek-V3 / Kimi-K2's {@link DeepseekV3Moe}.
 */
interface ExpertParallelBlock {

    /** [E] the routed experts, null where another expert-parallel rank holds one. */
    DenseMlp[] experts();

    /** The block's router: its choice and, in backward, its logits' gradient. */
    ExpertRouter router();

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
