package org.orbitrl.kernels.comm;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.Tensor;

import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Collectives of logical ranks against closed forms: values chosen so the exact result is known
 * (integers and halves, exact in f32), plus seeded random data checked against a double-precision
 * sum (|ours − ref| ≤ 1e-6 + 1e-6·|ref|) and for bit-identical results on every rank and every run.
 */
class LocalGroupTest {

    @ParameterizedTest
    @ValueSource(ints = {1, 2, 3, 4})
    void allReduceSumsEveryRank(int n) {
        int len = 37;
        List<float[]> out = LocalRanks.run(n, c -> {
            float[] v = new float[len];
            for (int i = 0; i < len; i++) {
                v[i] = (c.rank() + 1) * i + 0.5f;   // sum over ranks = i·n(n+1)/2 + n/2
            }
            Tensor t = Tensor.of(v, len);
            c.allReduceSum(t);
            return t.toFloatArray();
        });
        float[] expect = new float[len];
        for (int i = 0; i < len; i++) {
            expect[i] = i * n * (n + 1) / 2f + n / 2f;
        }
        for (int r = 0; r < n; r++) {
            assertArrayEquals(expect, out.get(r), 0f, "rank " + r + " of " + n);
        }
    }

    @Test
    void randomAllReduceIsReproducibleAndAccurate() {
        int n = 4;
        int len = 1000;
        float[][] in = new float[n][len];
        SplittableRandom rng = new SplittableRandom(11);
        for (float[] row : in) {
            for (int i = 0; i < len; i++) {
                row[i] = (float) (rng.nextDouble() * 2 - 1) * (i % 7 + 1);
            }
        }
        List<float[]> first = LocalRanks.run(n, c -> {
            Tensor t = Tensor.of(in[c.rank()].clone(), 10, 100);
            c.allReduceSum(t);
            return t.toFloatArray();
        });
        List<float[]> second = LocalRanks.run(n, c -> {
            Tensor t = Tensor.of(in[c.rank()].clone(), 10, 100);
            c.allReduceSum(t);
            return t.toFloatArray();
        });
        for (int i = 0; i < len; i++) {
            double ref = 0;
            for (float[] row : in) {
                ref += row[i];
            }
            float got = first.get(0)[i];
            assertTrue(Math.abs(got - ref) <= 1e-6 + 1e-6 * Math.abs(ref), "element " + i + ": " + got + " vs " + ref);
        }
        for (int r = 0; r < n; r++) {
            assertArrayEquals(first.get(0), first.get(r), 0f, "rank " + r + " differs from rank 0");
            assertArrayEquals(first.get(r), second.get(r), 0f, "rank " + r + " differs between runs");
        }
    }

    @Test
    void allGatherStacksInRankOrder() {
        int n = 3;
        List<float[]> out = LocalRanks.run(n, c -> {
            float[] v = new float[2 * 4];
            for (int i = 0; i < v.length; i++) {
                v[i] = 100 * c.rank() + i;
            }
            Tensor recv = Tensor.of(new float[n * v.length], (long) n * 2, 4);
            c.allGather(Tensor.of(v, 2, 4), recv);
            return recv.toFloatArray();
        });
        for (float[] got : out) {
            for (int r = 0; r < n; r++) {
                for (int i = 0; i < 8; i++) {
                    assertEquals(100 * r + i, got[r * 8 + i], 0f, "rank block " + r + " element " + i);
                }
            }
        }
    }

    @Test
    void reduceScatterGivesEachRankItsSummedBlock() {
        int n = 4;
        int block = 5;
        List<float[]> out = LocalRanks.run(n, c -> {
            float[] v = new float[n * block];
            for (int i = 0; i < v.length; i++) {
                v[i] = (c.rank() + 1) * (i + 1);     // sum over ranks = (i+1)·n(n+1)/2
            }
            Tensor recv = Tensor.of(new float[block], block);
            c.reduceScatterSum(Tensor.of(v, n * block), recv);
            return recv.toFloatArray();
        });
        for (int r = 0; r < n; r++) {
            for (int j = 0; j < block; j++) {
                int i = r * block + j;
                assertEquals((i + 1) * n * (n + 1) / 2f, out.get(r)[j], 0f, "rank " + r + " element " + j);
            }
        }
    }

    @Test
    void broadcastCopiesTheRoot() {
        int n = 3;
        List<float[]> out = LocalRanks.run(n, c -> {
            Tensor t = Tensor.of(new float[]{c.rank(), c.rank() * 2f, 7}, 3);
            c.broadcast(t, 2);
            return t.toFloatArray();
        });
        for (float[] got : out) {
            assertArrayEquals(new float[]{2, 4, 7}, got, 0f);
        }
    }

    /** Rank p sends (p + 2q) % 3 rows to rank q; row j from p to q holds (1000p + 10q + j, -j). */
    @ParameterizedTest
    @ValueSource(ints = {1, 2, 4})
    void raggedAllToAllDeliversEveryRow(int n) {
        List<float[]> out = LocalRanks.run(n, c -> {
            int p = c.rank();
            long[] sendCounts = new long[n];
            int total = 0;
            for (int q = 0; q < n; q++) {
                sendCounts[q] = (p + 2 * q) % 3;
                total += (int) sendCounts[q];
            }
            float[] send = new float[total * 2];
            int row = 0;
            for (int q = 0; q < n; q++) {
                for (int j = 0; j < sendCounts[q]; j++, row++) {
                    send[row * 2] = 1000 * p + 10 * q + j;
                    send[row * 2 + 1] = -j;
                }
            }
            long[] recvCounts = c.exchangeCounts(sendCounts);
            for (int src = 0; src < n; src++) {
                assertEquals((src + 2 * p) % 3, recvCounts[src], "count from rank " + src + " to rank " + p);
            }
            long rows = java.util.Arrays.stream(recvCounts).sum();
            Tensor recv = Tensor.of(new float[(int) rows * 2], rows, 2);
            c.allToAll(Tensor.of(send, total, 2), sendCounts, recv, recvCounts);
            return recv.toFloatArray();
        });
        for (int q = 0; q < n; q++) {
            float[] got = out.get(q);
            int row = 0;
            for (int p = 0; p < n; p++) {
                for (int j = 0; j < (p + 2 * q) % 3; j++, row++) {
                    assertEquals(1000 * p + 10 * q + j, got[row * 2], 0f, "rank " + q + " row " + row);
                    assertEquals(-j, got[row * 2 + 1], 0f, "rank " + q + " row " + row);
                }
            }
            assertEquals(row * 2, got.length, "rank " + q + " received rows");
        }
    }

    /** Ranks 0..5 split by rank % 3: each subgroup sums only its members, ranked in parent order. */
    @Test
    void splitGroupsReduceAmongTheirMembers() {
        List<float[]> out = LocalRanks.run(6, c -> {
            Communicator sub = c.split(c.rank() % 3);
            Communicator again = c.split(c.rank() / 3);   // a second split: consecutive blocks of 3
            Tensor t = Tensor.of(new float[]{c.rank(), 1}, 2);
            sub.allReduceSum(t);
            Tensor u = Tensor.of(new float[]{c.rank()}, 1);
            again.allReduceSum(u);
            return new float[]{sub.rank(), sub.size(), t.toFloatArray()[0], t.toFloatArray()[1], u.toFloatArray()[0]};
        });
        for (int r = 0; r < 6; r++) {
            int color = r % 3;
            float[] got = out.get(r);
            assertEquals(r / 3, got[0], 0f, "rank " + r + " index in its split");
            assertEquals(2, got[1], 0f, "rank " + r + " split size");
            assertEquals(color + (color + 3), got[2], 0f, "rank " + r + " split sum");
            assertEquals(2, got[3], 0f, "rank " + r + " split member count");
            assertEquals(r < 3 ? 0 + 1 + 2 : 3 + 4 + 5, got[4], 0f, "rank " + r + " second split sum");
        }
    }

    @Test
    void mismatchedShapesFailWithAMessageInsteadOfHanging() {
        var e = assertThrows(IllegalStateException.class, () -> LocalRanks.run(2, c -> {
            Tensor t = Tensor.of(new float[c.rank() == 0 ? 4 : 5], c.rank() == 0 ? 4 : 5);
            c.allReduceSum(t);
            return null;
        }));
        String msg = e.getMessage() + " / " + e.getCause();
        assertTrue(msg.contains("allReduceSum"), msg);
    }

    @Test
    @Timeout(30)   // a peer left waiting would give up only after the group's 60 s
    void aFailingRankReleasesItsPeers() {
        var e = assertThrows(IllegalStateException.class, () -> LocalRanks.run(3, c -> {
            if (c.rank() == 1) {
                throw new IllegalArgumentException("rank 1 input is bad");
            }
            c.barrier();
            return null;
        }));
        assertTrue(e.getMessage().contains("failed"), e.getMessage());
    }
}
