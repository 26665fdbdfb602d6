package org.orbitrl.model.tokenizer.internal;

/**
 * Open-addressing hash map from a pair of token ids to a merge rank, without boxing: the BPE
 * inner loop looks a pair up for every candidate merge.
 */
final class PairRankMap {
    private final long[] keys;
    private final int[] ranks;
    private final int mask;

    PairRankMap(int expected) {
        int cap = Integer.highestOneBit(Math.max(16, expected * 2 - 1)) << 1;
        keys = new long[cap];
        ranks = new int[cap];
        java.util.Arrays.fill(keys, -1L);
        mask = cap - 1;
    }

    void put(int a, int b, int rank) {
        long k = pack(a, b);
        int i = slot(k);
        while (keys[i] != -1L && keys[i] != k) {
            i = (i + 1) & mask;
        }
        keys[i] = k;
        ranks[i] = rank;
    }

    /** The rank of the merge (a, b), or -1. */
    int get(int a, int b) {
        long k = pack(a, b);
        int i = slot(k);
        while (true) {
            long s = keys[i];
            if (s == k) {
                return ranks[i];
            }
            if (s == -1L) {
                return -1;
            }
            i = (i + 1) & mask;
        }
    }

    private static long pack(int a, int b) {
        return ((long) a << 32) | (b & 0xFFFFFFFFL);
    }

    private int slot(long k) {
        long h = k * 0x9E3779B97F4A7C15L;
        return (int) (h >>> 40) & mask;
    }
}
