package org.orbitrl.model.arch.dsv4;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.model.StrictBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A DeepSeek V4 sequence's decode state on device memory ({@link StrictBackend}: memory the host may touch only
 * through the allocator; the fixture's model, window 8, compressed-sparse windows of 4, heavily compressed of 8): a
 * prefill of 20 tokens, then one token a step to 64. After every step the window's K=V rows and each compressor's open
 * window are values of device memory, and a compressor's entries are the same value (with its one device copy) until
 * one of its windows closes. The decoded logits equal the one-shot forward's on the same memory within 1e-6 of the
 * largest; a fork of the state taken at 40 tokens decodes the same bits as the sequence it came from, and goes on
 * doing so after that sequence's state is released at 52 tokens (released device tensors are poisoned in the tests: a fork that
 * shared them would read poison).
 */
class DeepseekV4DecodeStateTest {
    private static final int PREFILL = 20;
    private static final int TOKENS = 64;
    private static final int FORK_AT = 40;
    private static final int RELEASE_AT = 52;

    private StrictBackend strict;

    @BeforeEach
    void open() {
        strict = new StrictBackend();
    }

    @AfterEach
    void close() {
        strict.close();
    }

    @Test
    void theStateStaysInDeviceMemoryAndAForkDecodesTheSameBits() {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        DeepseekV4Model model = DeepseekV4Model.load(ConfigLoader.load(dir), new TestSafetensors(dir.resolve("model.safetensors")),
                strict);
        int v = model.vocabSize();
        int[] seq = new SplittableRandom(23).ints(TOKENS, 2, v).toArray();
        float[] one = strict.allocator().toFloats(model.forward(List.of(new CausalLM.Segment(seq, null))));
        float largest = 0;
        for (float x : one) {
            largest = Math.max(largest, Math.abs(x));
        }
        long kv0 = strict.allocator().liveBytes(MemoryCategory.KV_CACHE);
        KvCache cache = model.newCache(TOKENS);
        long caches = strict.allocator().liveBytes(MemoryCategory.KV_CACHE) - kv0;   // the length-keeping caches' own
        KvCache fork = null;
        Node[][] entries = new Node[model.layers()][2];
        int checkedEntries = 0;
        for (int at = 0; at < TOKENS; ) {
            int len = at == 0 ? PREFILL : 1;
            KvCache decoding = at < RELEASE_AT ? cache : fork;
            float[] got = logits(model, seq, at, len, decoding);
            for (int p = at; p < at + len; p++) {
                for (int i = 0; i < v; i++) {
                    float want = one[p * v + i];
                    float row = got[(p - at) * v + i];
                    assertTrue(Math.abs(want - row) <= 1e-6 * largest, "logit " + i + " at position " + p
                            + " through the cache: " + row + ", the one-shot forward " + want);
                }
            }
            if (fork != null && decoding == cache) {
                assertArrayEquals(got, logits(model, seq, at, len, fork), "the fork's logits at position " + at);
            }
            at += len;
            int held = (at <= RELEASE_AT ? 1 : 0) + (fork != null ? 1 : 0);   // sequences holding a state
            assertEquals(held * DeepseekV4Model.decodeStateBytes(model.spec(), at),
                    strict.allocator().liveBytes(MemoryCategory.KV_CACHE) - kv0 - caches,
                    "KV_CACHE bytes of " + held + " decode states after " + at + " tokens, as the planner counts them");
            if (at == RELEASE_AT) {   // the fork goes on alone: it must hold its own state
                cache.attachment().release();
                assertEquals(DeepseekV4Model.decodeStateBytes(model.spec(), at),
                        strict.allocator().liveBytes(MemoryCategory.KV_CACHE) - kv0 - caches, "KV_CACHE bytes after the release");
                continue;
            }
            for (int l = 0; l < model.layers() && decoding == cache; l++) {
                DeepseekV4Attention.State st = model.layerState(cache, l);
                assertNotNull(st.window, "layer " + l + "'s window");
                assertTrue(st.window.onDevice(), "layer " + l + "'s window in device memory after " + at + " tokens");
                assertEquals(Math.min(at, 7), st.windowRows(), "layer " + l + "'s window rows after " + at + " tokens (window 8)");
                AttentionKind kind = model.attentionKind(l);
                DeepseekV4Compressor.State[] comps = {st.comp, st.index};
                int[] rates = {kind == AttentionKind.HEAVILY_COMPRESSED ? 8 : 4, 4};
                for (int c = 0; c < 2; c++) {
                    boolean used = kind != AttentionKind.SLIDING && (c == 0 || kind == AttentionKind.COMPRESSED_SPARSE);
                    DeepseekV4Compressor.State cs = comps[c];
                    if (!used) {
                        assertNull(cs.entries(), "layer " + l + " compresses nothing");
                        continue;
                    }
                    assertTrue(cs.bufRows() == at % rates[c], "layer " + l + "'s open window after " + at + " tokens holds "
                            + cs.bufRows() + " rows, not " + (at % rates[c]));
                    assertTrue(cs.openRowsOnDevice(), "layer " + l + "'s open window in device memory after " + at + " tokens");
                    assertEquals(at / rates[c], cs.count(), "layer " + l + "'s entries after " + at + " tokens");
                    if (cs.count() > 0) {
                        assertTrue(cs.entries().onDevice(), "layer " + l + "'s entries in device memory after " + at + " tokens");
                    }
                    if (len == 1 && at % rates[c] != 0 && entries[l][c] != null) {   // no window closed at this token
                        assertSame(entries[l][c], cs.entries(), "layer " + l + "'s entries kept as they were at " + at);
                        checkedEntries++;
                    }
                    entries[l][c] = cs.entries();
                }
            }
            if (at == FORK_AT) {
                long before = strict.allocator().liveBytes(MemoryCategory.KV_CACHE);
                fork = model.newCache(TOKENS);
                caches += strict.allocator().liveBytes(MemoryCategory.KV_CACHE) - before;
                fork.attach(cache.attachment().copy());
                fork.advance(at);
            }
        }
        assertTrue(checkedEntries > 20, checkedEntries + " steps checked that the entries were kept");
    }

    /**
     * Five sequences prefilled with 3, 8, 13, 21 and 30 tokens (their windows close at different steps), then decoded
     * together one token each a step for 26 steps: the rows appended to every state in one operation, the closing
     * windows' kept rows read back together, the indexer's scores of every sequence read back at once. Each step's
     * logits of each sequence equal that sequence's one-shot forward within 1e-6 of the largest logit.
     */
    @Test
    void aBatchOfSequencesDecodesAsEachAlone() {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        DeepseekV4Model model = DeepseekV4Model.load(ConfigLoader.load(dir), new TestSafetensors(dir.resolve("model.safetensors")),
                strict);
        int v = model.vocabSize();
        int[] prompts = {3, 8, 13, 21, 30};
        int steps = 26;
        SplittableRandom r = new SplittableRandom(31);
        int[][] seqs = new int[prompts.length][];
        float[][] one = new float[prompts.length][];
        float largest = 0;
        List<KvCache> caches = new java.util.ArrayList<>();
        for (int i = 0; i < prompts.length; i++) {
            seqs[i] = r.ints(prompts[i] + steps, 2, v).toArray();
            one[i] = strict.allocator().toFloats(model.forward(List.of(new CausalLM.Segment(seqs[i], null))));
            for (float x : one[i]) {
                largest = Math.max(largest, Math.abs(x));
            }
            KvCache c = model.newCache(prompts[i] + steps);
            strict.allocator().release(model.forward(List.of(new CausalLM.Segment(Arrays.copyOf(seqs[i], prompts[i]), c))));
            caches.add(c);
        }
        for (int step = 0; step < steps; step++) {
            List<CausalLM.Segment> batch = new java.util.ArrayList<>();
            for (int i = 0; i < prompts.length; i++) {
                batch.add(new CausalLM.Segment(new int[]{seqs[i][prompts[i] + step]}, caches.get(i)));
            }
            float[] got = strict.allocator().toFloats(model.forwardLast(batch));
            for (int i = 0; i < prompts.length; i++) {
                int p = prompts[i] + step;
                for (int t = 0; t < v; t++) {
                    float want = one[i][p * v + t];
                    float row = got[i * v + t];
                    assertTrue(Math.abs(want - row) <= 1e-6 * largest, "sequence " + i + ", logit " + t + " at position " + p
                            + " decoded in the batch: " + row + ", its one-shot forward " + want);
                }
            }
        }
        for (KvCache c : caches) {
            c.attachment().release();
        }
    }

    /**
     * A cache rewound to its start and run again holds one decode state (the old one freed), and closing it frees the
     * state and the cache: the device's KV_CACHE bytes back where they were.
     */
    @Test
    void aRewoundCacheFreesItsOldStateAndClosingFreesTheRest() {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        DeepseekV4Model model = DeepseekV4Model.load(ConfigLoader.load(dir), new TestSafetensors(dir.resolve("model.safetensors")),
                strict);
        long kv0 = strict.allocator().liveBytes(MemoryCategory.KV_CACHE);
        KvCache cache = model.newCache(64);
        long caches = strict.allocator().liveBytes(MemoryCategory.KV_CACHE) - kv0;
        int[] toks = new SplittableRandom(3).ints(10, 2, model.vocabSize()).toArray();
        strict.allocator().release(model.forward(List.of(new CausalLM.Segment(toks, cache))));
        cache.truncate(0);
        strict.allocator().release(model.forward(List.of(new CausalLM.Segment(toks, cache))));
        assertEquals(DeepseekV4Model.decodeStateBytes(model.spec(), 10),
                strict.allocator().liveBytes(MemoryCategory.KV_CACHE) - kv0 - caches, "KV_CACHE bytes after the rewind");
        cache.close();
        assertEquals(kv0, strict.allocator().liveBytes(MemoryCategory.KV_CACHE), "KV_CACHE bytes after the close");
        KvCache small = model.newCache(1);   // grown by the forward: the buffers it outgrew freed as it grew
        strict.allocator().release(model.forward(List.of(new CausalLM.Segment(toks, small))));
        small.close();
        assertEquals(kv0, strict.allocator().liveBytes(MemoryCategory.KV_CACHE), "KV_CACHE bytes after a grown cache's close");
        cache.close();
        assertEquals(kv0, strict.allocator().liveBytes(MemoryCategory.KV_CACHE), "a second close frees nothing more");
    }

    /**
     * Each projection's routed experts of a layer lie back to back in device memory (MXFP4 experts as the released
     * checkpoints hold them): they read as one stacked matrix of every expert's rows in order, which the grouped
     * tensor-core products take; before, each expert was placed alone and the decode products of 16 pairs and more
     * took the per-pair GEMV.
     */
    @Test
    void routedExpertsLieBackToBackOnTheDevice() throws Exception {
        org.orbitrl.model.spec.ModelSpec spec = ConfigLoader.load(TestSafetensors.fixtures().resolve("deepseek_v4"));
        DeepseekV4Model model = DeepseekV4Model.load(spec, new RandomDeepseekV4(spec, 6), strict);
        int sets = 0;
        for (org.orbitrl.model.nn.AdapterTargets.ExpertSet set : model.expertSets()) {
            for (List<org.orbitrl.model.nn.Linear> part : List.of(set.gate(), set.up(), set.down())) {
                org.orbitrl.kernels.quant.QuantizedTensor[] q = new org.orbitrl.kernels.quant.QuantizedTensor[part.size()];
                for (int e = 0; e < q.length; e++) {
                    q[e] = ((org.orbitrl.model.nn.Weight.Quantized) part.get(e).weight()).w();
                }
                org.orbitrl.kernels.quant.QuantizedTensor stacked = new org.orbitrl.kernels.ExpertWeights(
                        Math.toIntExact(q[0].rows()), Math.toIntExact(q[0].cols()), new org.orbitrl.kernels.Tensor[q.length], q).stacked();
                assertTrue(stacked != null && stacked.rows() == q.length * q[0].rows(), set.module() + ": " + q.length
                        + " experts of " + q[0] + " read as one matrix");
                sets++;
            }
        }
        assertTrue(sets == 3 * spec.numLayers(), sets + " expert projections");
    }

    /** A window of one position keeps no rows: decoding through the cache still gives the one-shot forward's logits. */
    @Test
    void aWindowOfOnePositionKeepsNoRows() throws Exception {
        com.fasterxml.jackson.databind.ObjectMapper json = new com.fasterxml.jackson.databind.ObjectMapper();
        Path fixture = TestSafetensors.fixtures().resolve("deepseek_v4");
        com.fasterxml.jackson.databind.node.ObjectNode cfg =
                (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(fixture.resolve("config.json").toFile());
        cfg.put("sliding_window", 1);
        Path dir = java.nio.file.Files.createTempDirectory("v4-window-1");
        json.writeValue(dir.resolve("config.json").toFile(), cfg);
        org.orbitrl.model.spec.ModelSpec spec = ConfigLoader.load(dir);
        DeepseekV4Model model = DeepseekV4Model.load(spec, new RandomDeepseekV4(spec, 5), strict);
        int v = model.vocabSize();
        int[] seq = new SplittableRandom(8).ints(12, 2, v).toArray();
        float[] one = strict.allocator().toFloats(model.forward(List.of(new CausalLM.Segment(seq, null))));
        float largest = 0;
        for (float x : one) {
            largest = Math.max(largest, Math.abs(x));
        }
        KvCache cache = model.newCache(12);
        for (int at = 0; at < 12; ) {
            int len = at == 0 ? 5 : 1;
            float[] got = logits(model, seq, at, len, cache);
            for (int i = 0; i < len * v; i++) {
                assertTrue(Math.abs(one[at * v + i] - got[i]) <= 1e-6 * largest, "logit " + (i % v) + " at position "
                        + (at + i / v) + ": " + got[i] + ", the one-shot forward " + one[at * v + i]);
            }
            at += len;
            assertEquals(0, model.layerState(cache, 0).windowRows(), "a window of one position after " + at + " tokens");
        }
        cache.close();
    }

    private float[] logits(DeepseekV4Model model, int[] seq, int at, int len, KvCache cache) {
        return strict.allocator().toFloats(model.forward(List.of(new CausalLM.Segment(Arrays.copyOfRange(seq, at, at + len),
                cache))));
    }

}
