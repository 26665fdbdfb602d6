package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.cpu.ScalarBackend;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The paged-cache defaults against attention over contiguous per-sequence keys built without any
 * block table: sequences of different lengths scattered over shuffled blocks, one new token each
 * written through {@link Backend#pagedKvWrite}, then {@link Backend#pagedDecodeAttention} equal bit
 * for bit to the scalar backend's attention over the sequence's keys in position order.
 */
class PagedOpsTest {
    private static final int HKV = 2;
    private static final int HQ = 4;
    private static final int D = 8;
    private static final int BS = 4;

    @Test
    void pagedDecodeEqualsContiguousAttentionThroughShuffledBlocks() {
        ScalarBackend b = new ScalarBackend();
        SplittableRandom r = new SplittableRandom(5);
        int[] lens = {1, 6, 9, 4};        // keys per sequence, the new token included
        int blocks = 12;
        int maxBlocks = 3;
        List<Integer> free = new ArrayList<>();
        for (int i = 0; i < blocks; i++) {
            free.add(i);
        }
        Collections.shuffle(free, new java.util.Random(9));
        Tensor kCache = random(r, (long) blocks * BS, HKV * D);   // [rows, Hkv*D]
        Tensor vCache = random(r, (long) blocks * BS, HKV * D);
        int n = lens.length;
        int[] table = new int[n * maxBlocks];
        int[] slots = new int[n];
        int next = 0;
        for (int s = 0; s < n; s++) {
            for (int j = 0; j < (lens[s] + BS - 1) / BS; j++) {
                table[s * maxBlocks + j] = free.get(next++);
            }
            int p = lens[s] - 1;
            slots[s] = table[s * maxBlocks + p / BS] * BS + p % BS;
        }
        Tensor newK = random(r, n, HKV * D);   // [B, Hkv*D]
        Tensor newV = random(r, n, HKV * D);
        Tensor q = random(r, n, HQ * D).reshape(n, HQ, D);
        b.pagedKvWrite(newK, newV, kCache, vCache, Tensor.ofInts(slots, n));
        Tensor out = Tensor.allocate(Arena.ofAuto(), DType.F32, n, HQ, D);
        AttentionSpec spec = AttentionSpec.causal(D);
        b.pagedDecodeAttention(q, kCache, vCache, Tensor.ofInts(table, n, maxBlocks), Tensor.ofInts(lens, n), BS, HKV, out, spec);
        for (int s = 0; s < n; s++) {
            int len = lens[s];
            Tensor k = Tensor.allocate(Arena.ofAuto(), DType.F32, len, HKV, D);   // position order, built directly
            Tensor v = Tensor.allocate(Arena.ofAuto(), DType.F32, len, HKV, D);
            for (int p = 0; p < len; p++) {
                long row = (long) table[s * maxBlocks + p / BS] * BS + p % BS;
                for (int c = 0; c < HKV * D; c++) {
                    boolean fresh = p == len - 1;
                    k.setFloat(fresh ? newK.getFloat(s, c) : kCache.getFloat(row, c), p, c / D, c % D);
                    v.setFloat(fresh ? newV.getFloat(s, c) : vCache.getFloat(row, c), p, c / D, c % D);
                }
            }
            Tensor want = Tensor.allocate(Arena.ofAuto(), DType.F32, 1, HQ, D);
            b.attention(q.slice(0, s, s + 1), k, v, want, len - 1, spec);
            float[] w = want.toFloatArray();
            float[] g = out.slice(0, s, s + 1).contiguous().toFloatArray();
            for (int i = 0; i < w.length; i++) {
                assertEquals(w[i], g[i], 0f, "sequence " + s + " element " + i + " (exact)");
            }
        }
    }

    /**
     * A latent cache (one key head whose first Dv channels are the values, no value cache): each sequence's output
     * against softmax(q·k / sqrt(D))·k[:Dv] computed from the definition in double precision over the keys in position
     * order (within 1e-6 of each output's largest magnitude), and the new entries written where their slots say.
     */
    @Test
    void aLatentCacheTakesItsValuesFromTheKeysLeadingChannels() {
        ScalarBackend b = new ScalarBackend();
        SplittableRandom r = new SplittableRandom(15);
        int d = 12;
        int dv = 8;
        int hq = 5;
        int[] lens = {3, 10, 1, 7};
        int maxBlocks = 3;
        int n = lens.length;
        int[] table = {7, 2, 0, 5, 1, 9, 4, 0, 0, 8, 3, 0};   // [4, 3]: distinct blocks, unused entries 0
        Tensor kCache = random(r, 10L * BS, d);                 // [rows, D]
        int[] slots = new int[n];
        for (int s = 0; s < n; s++) {
            int p = lens[s] - 1;
            slots[s] = table[s * maxBlocks + p / BS] * BS + p % BS;
        }
        Tensor newK = random(r, n, d);
        Tensor q = random(r, n, (long) hq * d).reshape(n, hq, d);
        b.pagedKvWrite(newK, null, kCache, null, Tensor.ofInts(slots, n));
        for (int s = 0; s < n; s++) {
            for (int c = 0; c < d; c++) {
                assertEquals(newK.getFloat(s, c), kCache.getFloat(slots[s], c), 0f, "sequence " + s + "'s entry, channel " + c);
            }
        }
        Tensor out = Tensor.allocate(Arena.ofAuto(), DType.F32, n, hq, dv);
        b.pagedDecodeAttention(q, kCache, null, Tensor.ofInts(table, n, maxBlocks), Tensor.ofInts(lens, n), BS, 1, out,
                AttentionSpec.causal(d));
        for (int s = 0; s < n; s++) {
            for (int h = 0; h < hq; h++) {
                double[] score = new double[lens[s]];
                double max = Double.NEGATIVE_INFINITY;
                for (int p = 0; p < lens[s]; p++) {
                    long row = (long) table[s * maxBlocks + p / BS] * BS + p % BS;
                    for (int c = 0; c < d; c++) {
                        score[p] += (double) q.getFloat(s, h, c) * kCache.getFloat(row, c);
                    }
                    score[p] /= Math.sqrt(d);
                    max = Math.max(max, score[p]);
                }
                double sum = 0;
                for (int p = 0; p < lens[s]; p++) {
                    score[p] = Math.exp(score[p] - max);
                    sum += score[p];
                }
                for (int c = 0; c < dv; c++) {
                    double want = 0;
                    for (int p = 0; p < lens[s]; p++) {
                        long row = (long) table[s * maxBlocks + p / BS] * BS + p % BS;
                        want += score[p] / sum * kCache.getFloat(row, c);
                    }
                    assertEquals(want, out.getFloat(s, h, c), 1e-6, "sequence " + s + " head " + h + " channel " + c);
                }
            }
        }
    }

    private static Tensor random(SplittableRandom r, long rows, long cols) {
        float[] v = new float[Math.toIntExact(rows * cols)];
        for (int i = 0; i < v.length; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return Tensor.of(v, rows, cols);
    }
}
