package org.orbitrl.memory.plan;

import java.util.Map;
import org.orbitrl.model.spec.ModelSpec;

/**
 * Parameter counts of a model by family, the activated count, and the multi-token-prediction
 * layers reported apart.
 *
 * <p>The activated count is what one token touches: every parameter except the routed experts it
 * is not sent to, {@code total - routed * (1 - k/E)} (embedding and head included, as model
 * authors count them). Rounded down to a whole parameter.
 *
 * @param byFamily        parameters per family (sums to {@code total})
 * @param total           all parameters of the decoder (what transformers counts)
 * @param active          parameters one token uses
 * @param routedExperts   parameters of the routed experts
 * @param buffers         elements of saved non-parameter buffers (router biases, hash tables)
 * @param mtp             parameters of the multi-token-prediction layers (not in {@code total})
 * @param mtpSharedCopies embedding/head copies the upstream checkpoint stores with the MTP layers
 */
public record ParamCounts(Map<ParamFamily, Long> byFamily, long total, long active, long routedExperts, long buffers,
                          long mtp, long mtpSharedCopies) {

    public ParamCounts {
        byFamily = Map.copyOf(byFamily);
    }

    /** The counts of {@code spec}. */
    public static ParamCounts of(ModelSpec spec) {
        return of(WeightInventory.of(spec));
    }

    /** The counts of an inventory. */
    public static ParamCounts of(WeightInventory inv) {
        Map<ParamFamily, Long> fam = inv.paramsByFamily();
        long total = inv.totalParams();
        long routed = fam.get(ParamFamily.ROUTED_EXPERTS);
        long active = total;
        if (inv.spec().moe() != null && routed > 0) {
            long e = inv.spec().moe().numExperts();
            long k = inv.spec().moe().topK();
            active = total - unusedRouted(routed, e, k);
        }
        return new ParamCounts(fam, total, active, routed, inv.bufferElements(), inv.mtpParams(), inv.mtpSharedCopies());
    }

    /** {@code routed * (1 - k/E) = routed * (E - k) / E}, rounded up, without overflow. */
    private static long unusedRouted(long routed, long e, long k) {
        return java.math.BigInteger.valueOf(routed).multiply(java.math.BigInteger.valueOf(e - k))
                .add(java.math.BigInteger.valueOf(e - 1)).divide(java.math.BigInteger.valueOf(e)).longValueExact();
    }

    /** Parameters of one family. */
    public long of(ParamFamily f) {
        return byFamily.getOrDefault(f, 0L);
    }
}
