package org.orbitrl.scheduler.task;

import java.nio.charset.StandardCharsets;

/**
 * Which generated problems are held out for evaluation: a problem is held out when a fixed hash
 * of its canonical form (its {@link Problem#id()}) falls in one of {@value #ONE_IN} buckets. The
 * decision depends on the problem alone (not on the seed, the step or the order of generation),
 * so training, which skips held-out problems, can never produce an evaluation problem, and the
 * evaluation split is the same for every job.
 *
 * <p>The hash is 64-bit FNV-1a over the UTF-8 bytes followed by SplitMix64's finaliser; changing
 * it changes every task's split, so it is fixed here once.
 */
public final class HeldOutSplit {

    /** One problem in this many is held out. */
    public static final int ONE_IN = 10;

    private HeldOutSplit() {
    }

    /** Whether the problem with this canonical id belongs to the evaluation split. */
    public static boolean isHeldOut(String canonicalId) {
        return Long.remainderUnsigned(hash(canonicalId), ONE_IN) == 0;
    }

    /** The split's hash of a canonical id. */
    static long hash(String canonicalId) {
        long h = 0xcbf29ce484222325L;
        for (byte b : canonicalId.getBytes(StandardCharsets.UTF_8)) {
            h ^= b & 0xff;
            h *= 0x100000001b3L;
        }
        return Seeds.mix(h);
    }
}
