package org.orbitrl.daemon.testing;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.util.BitSet;

/**
 * The trainer state of {@link LedgerRunner}: what it has trained, folded so that losing or
 * re-training a sample shows. {@code chain} is order-dependent, {@code trained} records every
 * group id once, {@code duplicates} and {@code gaps} count what exactly-once forbids.
 */
public final class LedgerState {
    public long step;
    public long adapterVersion;
    public long consumedIndex = -1;
    public long samplesTrained;
    public long groupsTrained;
    public long lastGroupId = -1;
    public long chain = 17;
    public long duplicates;
    public long gaps;
    public final BitSet trained = new BitSet();

    /** Folds one group into the chain; the same function the tests use to recompute it from the log. */
    public static long mix(long chain, long groupId, long contentHash) {
        long h = chain * 0x9E3779B97F4A7C15L + groupId;
        return Long.rotateLeft(h ^ contentHash, 17) * 0xBF58476D1CE4E5B9L;
    }

    public byte[] toBytes() throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try (DataOutputStream out = new DataOutputStream(bytes)) {
            out.writeLong(step);
            out.writeLong(adapterVersion);
            out.writeLong(consumedIndex);
            out.writeLong(samplesTrained);
            out.writeLong(groupsTrained);
            out.writeLong(lastGroupId);
            out.writeLong(chain);
            out.writeLong(duplicates);
            out.writeLong(gaps);
            long[] words = trained.toLongArray();
            out.writeInt(words.length);
            for (long w : words) {
                out.writeLong(w);
            }
        }
        return bytes.toByteArray();
    }

    public static LedgerState fromBytes(byte[] b) throws IOException {
        LedgerState s = new LedgerState();
        try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(b))) {
            s.step = in.readLong();
            s.adapterVersion = in.readLong();
            s.consumedIndex = in.readLong();
            s.samplesTrained = in.readLong();
            s.groupsTrained = in.readLong();
            s.lastGroupId = in.readLong();
            s.chain = in.readLong();
            s.duplicates = in.readLong();
            s.gaps = in.readLong();
            long[] words = new long[in.readInt()];
            for (int i = 0; i < words.length; i++) {
                words[i] = in.readLong();
            }
            s.trained.or(BitSet.valueOf(words));
        }
        return s;
    }
}
