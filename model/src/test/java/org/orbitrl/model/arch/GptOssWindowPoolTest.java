package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.PagedSequence;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * gpt-oss's sliding-window layers (window 8 in the fixture) keeping their rows in a window pool of 4-position blocks,
 * beside the full layers' pool: each sequence gives back every block that has left its window as it advances, so it
 * holds at most {@code (8 - 1) / 4 + 2 = 3} window blocks after a step, and the blocks it gives back are taken up by
 * the other row decoding beside it. The logits are bit for bit those of one pool holding every layer (whose batched
 * decode steps match transformers within 1e-4), through a prefill, single tokens across the window, and a fork;
 * closing every sequence returns every block of both pools.
 */
class GptOssWindowPoolTest {
    private static final int BS = 4;

    private static BlockPool pool(GptOssModel m, int blocks, boolean[] holds, int window) {
        var g = m.cacheGeometry();
        return new BlockPool(TensorAllocator.heap(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), BS, blocks, false,
                DType.F32, holds, window);
    }

    /** Row b's logits [T, V] of a 3-token prefill then single tokens, every row batched, through {@code caches}. */
    private static float[][] decode(GptOssModel m, List<int[]> rows, List<PagedSequence> caches, List<int[]> heldAfterStep) {
        int t = rows.get(0).length;
        int v = m.vocabSize();
        float[][] got = new float[rows.size()][t * v];
        for (int j = 0; j < t; j = j == 0 ? 3 : j + 1) {
            int len = j == 0 ? 3 : 1;
            List<CausalLM.Segment> batch = new ArrayList<>();
            for (int b = 0; b < rows.size(); b++) {
                batch.add(new CausalLM.Segment(Arrays.copyOfRange(rows.get(b), j, j + len), caches.get(b)));
            }
            float[] lg = FixtureRuns.host(m, m.forward(batch));
            for (int b = 0; b < rows.size(); b++) {
                System.arraycopy(lg, b * len * v, got[b], j * v, len * v);
            }
            int[] held = new int[rows.size()];
            for (int b = 0; b < rows.size(); b++) {
                held[b] = caches.get(b).windowBlocksHeld();
            }
            heldAfterStep.add(held);
        }
        return got;
    }

    @Test
    void theSlidingLayersKeepOnlyTheirWindowAndComputeTheSame() {
        GptOssModel m = GptOssFixtureTest.model();
        int[] windows = m.attentionWindows();
        assertArrayEquals(new int[]{8, 0}, windows, "the fixture's layer_types: sliding, full");
        boolean[] full = {false, true};
        boolean[] sliding = {true, false};
        List<int[]> rows = GptOssFixtureTest.inputRows(new TestSafetensors(GptOssFixtureTest.dir().resolve("reference.safetensors")));
        int t = rows.get(0).length;
        assertTrue(t > 8 + 2 * BS, "the rows cross the window by more than two blocks: " + t);

        BlockPool all = pool(m, 64, null, 0);
        List<PagedSequence> plain = List.of(new PagedSequence(all), new PagedSequence(all));
        float[][] expected = decode(m, rows, plain, new ArrayList<>());
        float[] reference = new TestSafetensors(GptOssFixtureTest.dir().resolve("reference.safetensors")).get("logits")
                .toFloatArray();   // [B, T, V] by transformers
        for (int b = 0; b < rows.size(); b++) {   // the decode steps batched over the paged pools (PagedDecode)
            Qwen3FixtureTest.assertClose("row " + b + " decoded over one paged pool", FixtureRuns.row(reference, b, t,
                    m.vocabSize()), expected[b], GptOssFixtureTest.ATOL);
        }

        BlockPool main = pool(m, 64, full, 0);
        int windowBlocks = 8;   // two sequences of three live blocks each, and the blocks a step takes before it gives back
        BlockPool window = pool(m, windowBlocks, sliding, 8);
        List<PagedSequence> split = List.of(new PagedSequence(main, window), new PagedSequence(main, window));
        List<int[]> held = new ArrayList<>();
        float[][] got = decode(m, rows, split, held);
        for (int b = 0; b < rows.size(); b++) {
            assertArrayEquals(expected[b], got[b], "row " + b + ": the window pool against one pool for every layer");
        }
        for (int s = 1; s < held.size(); s++) {   // after the prefill's step, each decode step
            for (int b = 0; b < rows.size(); b++) {
                assertTrue(held.get(s)[b] <= (8 - 1) / BS + 2, "row " + b + " after step " + s + " holds " + held.get(s)[b]
                        + " window blocks");
            }
        }
        int blocksEach = (t + BS - 1) / BS;
        assertEquals(64 - 2 * blocksEach, main.freeBlocks(), "the full layers keep every position");
        assertTrue(2 * blocksEach > windowBlocks, "without giving blocks back the rows would not have fit the window pool");

        // a fork shares the window blocks still live and copies the partial one before it writes
        PagedSequence fork = split.get(0).fork();
        int[] next = {rows.get(1)[3]};
        float[] a = FixtureRuns.host(m, m.forward(List.of(new CausalLM.Segment(next, split.get(0)))));
        float[] f = FixtureRuns.host(m, m.forward(List.of(new CausalLM.Segment(next, fork))));
        float[] ref = FixtureRuns.host(m, m.forward(List.of(new CausalLM.Segment(next, plain.get(0)))));
        assertArrayEquals(ref, a, "the sequence after its fork");
        assertArrayEquals(ref, f, "the fork");
        for (PagedSequence s : List.of(split.get(0), split.get(1), fork)) {
            s.close();
        }
        assertEquals(64, main.freeBlocks(), "every block of the main pool is back");
        assertEquals(windowBlocks, window.freeBlocks(), "every block of the window pool is back");
    }

    /**
     * Past the first tile of 64 keys a sliding layer's gather starts at a later tile: two seeded rows of 160 tokens, a
     * prefill of 100 and then single tokens, give the logits of one pool, whose gathers start at position 0, bit for
     * bit.
     */
    @Test
    void gathersFromALaterTileComputeTheSame() {
        GptOssModel m = GptOssFixtureTest.model();
        java.util.SplittableRandom rnd = new java.util.SplittableRandom(7);
        List<int[]> rows = new ArrayList<>();
        for (int b = 0; b < 2; b++) {
            rows.add(rnd.ints(160, 0, m.vocabSize()).toArray());
        }
        BlockPool all = pool(m, 128, null, 0);
        BlockPool main = pool(m, 128, new boolean[]{false, true}, 0);
        BlockPool window = pool(m, 64, new boolean[]{true, false}, 8);
        float[][] expected = FixtureRuns.decodeInSteps(m, rows, List.of(new PagedSequence(all), new PagedSequence(all)), 100);
        float[][] got = FixtureRuns.decodeInSteps(m, rows, List.of(new PagedSequence(main, window),
                new PagedSequence(main, window)), 100);
        for (int b = 0; b < rows.size(); b++) {
            assertArrayEquals(expected[b], got[b], "row " + b);
        }
    }

    @Test
    void poolsThatDoNotSplitTheLayersAreRefused() {
        GptOssModel m = GptOssFixtureTest.model();
        BlockPool main = pool(m, 8, new boolean[]{false, true}, 0);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> new PagedSequence(main, pool(m, 8, new boolean[]{true, true}, 8)));
        assertEquals("layer 1 is in both pools", e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new PagedSequence(main, pool(m, 8, new boolean[]{true, false}, 0)));
        assertTrue(e.getMessage().startsWith("a window pool needs a window"), e.getMessage());
    }
}
