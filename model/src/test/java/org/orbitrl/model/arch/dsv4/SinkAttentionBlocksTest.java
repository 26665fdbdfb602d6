package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.model.StrictBackend;

import java.util.Arrays;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4's attention on a backend a block of {@link DeepseekV4SinkAttention#QUERY_BLOCK} queries at a time over
 * the keys each block sees, against the host's loop over every key (each query and head in turn), forward and backward:
 * one sequence of 700 queries (three blocks, the last ragged) with V4's mask (a causal window of 40 raw keys, an entry
 * every 4 tokens of which each query sees a random choice of at most 24 closed ones, one query seeing only itself) and
 * random sinks. Output and both gradients within 2e-5 of each one's largest magnitude (f32 sums in other orders). On
 * strict device memory (its attention a double-precision reference; the CUDA default kernels: {@code
 * CudaSinkAttentionBlocksTest}). The blocks themselves against the mask's visible columns counted directly.
 */
class SinkAttentionBlocksTest {
    private static final int T = 700;
    private static final int HEADS = 3;
    private static final int D = 32;
    private static final int WINDOW = 40;
    private static final int RATE = 4;
    private static final int TOPK = 24;

    @Test
    void blocksReadOnlyTheKeysTheirQueriesSee() {
        float[] mask = mask(new SplittableRandom(5));
        int s = T + T / RATE;
        DeepseekV4SinkAttention.Block[] blocks = DeepseekV4SinkAttention.blocks(mask, T, s);
        assertEquals(3, blocks.length);
        for (DeepseekV4SinkAttention.Block b : blocks) {
            boolean[] seen = new boolean[s];
            for (int i = b.q0(); i < b.q0() + b.rows(); i++) {
                for (int j = 0; j < s; j++) {
                    seen[j] |= mask[i * s + j] != Float.NEGATIVE_INFINITY;
                }
            }
            boolean[] listed = new boolean[s];
            int keys = 0;
            for (int r = 0; r < b.start().length; r++) {
                assertTrue(b.start()[r] < b.end()[r] && (r == 0 || b.start()[r] > b.end()[r - 1]), "runs sorted, apart");
                for (int j = b.start()[r]; j < b.end()[r]; j++) {
                    listed[j] = true;
                    keys++;
                }
            }
            assertArrayEquals(seen, listed, "block at " + b.q0());
            assertEquals(keys, b.keys());
            assertTrue(b.keys() < s / 2, "a block of " + b.rows() + " queries reads " + b.keys() + " of " + s + " keys");
        }
        assertEquals(T - 2 * DeepseekV4SinkAttention.QUERY_BLOCK, blocks[2].rows());
    }

    @Test
    void blockedOnStrictDeviceMemoryMatchesTheHostsLoop() {
        try (StrictBackend strict = new StrictBackend()) {
            compare(strict);
        }
    }

    /** The blocked attention on {@code device} against the host's loop (also run by {@code CudaSinkAttentionBlocksTest}). */
    static void compare(Backend device) {
        SplittableRandom r = new SplittableRandom(11);
        int s = T + T / RATE;
        float[] q = random(r, T * HEADS * D, 1f);
        float[] kv = random(r, s * D, 1f);
        float[] sinks = random(r, HEADS, 1f);
        float[] dy = random(r, T * HEADS * D, 1f);
        float[] mask = mask(r);
        float scale = (float) (1 / Math.sqrt(D));
        float[][] want = run(null, q, kv, mask, sinks, dy, scale);
        float[][] got = run(device, q, kv, mask, sinks, dy, scale);
        String[] what = {"output", "d q", "d kv"};
        for (int i = 0; i < 3; i++) {
            double big = 0;
            double worst = 0;
            for (int j = 0; j < want[i].length; j++) {
                big = Math.max(big, Math.abs(want[i][j]));
                worst = Math.max(worst, Math.abs(want[i][j] - got[i][j]));
            }
            assertTrue(big > 0, what[i] + " all zero");
            assertTrue(worst <= 2e-5 * big, device.name() + " " + what[i] + ": worst " + worst + " of the largest " + big);
        }
    }

    /** {output, dq, dkv} of attend on {@code b}, or of the host's loop where b is null. */
    private static float[][] run(Backend b, float[] q, float[] kv, float[] mask, float[] sinks, float[] dy, float scale) {
        GradTape tape = new GradTape();
        Node qn = new Node(q);
        Node kvn = new Node(kv);
        Node y = b == null ? hostAttend(tape, qn, kvn, mask, sinks, scale)
                : DeepseekV4SinkAttention.attend(tape, b, qn, kvn, mask, sinks, HEADS, D, scale);
        if (b != null) {
            assertTrue(y.onDevice(), b.name() + " took the attention");
        }
        System.arraycopy(dy, 0, y.grad(), 0, dy.length);
        float[] out = y.v().clone();
        tape.backward();
        return new float[][]{out, qn.grad(), kvn.grad()};
    }

    private static Node hostAttend(GradTape tape, Node q, Node kv, float[] mask, float[] sinks, float scale) {
        try (Backend cpu = org.orbitrl.kernels.Backends.cpu()) {
            return DeepseekV4SinkAttention.attend(tape, cpu, q, kv, mask, sinks, HEADS, D, scale);
        }
    }

    /** V4's mask over T raw keys then T / RATE entries; query 0 sees only itself. */
    private static float[] mask(SplittableRandom r) {
        int s = T + T / RATE;
        float[] m = new float[T * s];
        Arrays.fill(m, Float.NEGATIVE_INFINITY);
        for (int i = 0; i < T; i++) {
            for (int j = Math.max(0, i - WINDOW + 1); j <= i; j++) {
                m[i * s + j] = 0f;
            }
            int closed = (i + 1) / RATE;
            for (int e = 0; e < closed; e++) {
                if (closed <= TOPK || r.nextInt(closed) < TOPK) {
                    m[i * s + T + e] = 0f;
                }
            }
        }
        return m;
    }

    private static float[] random(SplittableRandom r, int n, float a) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1) * a;
        }
        return v;
    }
}
