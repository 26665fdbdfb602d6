package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.adapter.LoraFixtureTest;
import org.orbitrl.model.adapter.LoraLinear;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Placement;
import org.orbitrl.model.nn.Weight;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * The grouped sparse MoE block ({@link GroupedMoe}: routing, grouping, expert products and backward
 * through the backend's {@code moe*} operations) against the per-expert path with host routing,
 * which the fixture tests check against Hugging Face logits and PEFT gradients: the same logits,
 * input gradients and LoRA gradients within {@code 1e-5 + 1e-4·|ref|} (only the order of the
 * weighted sums over a token's experts differs), on the qwen3_moe fixture and on ragged routings
 * where some experts get no token, for chunk sizes 1, 3 and E.
 */
class GroupedMoeTest {
    static final float ATOL = 1e-5f;
    static final float RTOL = 1e-4f;

    @Test
    void fixtureLogitsAndLoraGradientsMatchThePerExpertPath() {
        var dir = TestSafetensors.fixtures().resolve("qwen3_moe");
        var cfg = AdapterConfig.read(dir.resolve("adapter"));
        float[][] logits = new float[2][];
        List<Map<String, float[]>> grads = new ArrayList<>();
        for (boolean grouped : new boolean[]{false, true}) {
            var base = LoraFixtureTest.setup("qwen3_moe");
            Qwen3Model m = base.model();
            m.setGroupedExperts(grouped);
            var s = new LoraFixtureTest.Setup(m, base.adapter(), base.ref(), base.seqs());
            logits[grouped ? 1 : 0] = m.forwardTrain(s.seqs(), false).logits().toFloatArray();
            grads.add(LoraFixtureTest.gradients(s, false));
        }
        assertClose("fixture logits, grouped vs per expert", logits[0], logits[1]);
        int expertGrads = 0;
        for (var e : grads.get(0).entrySet()) {
            assertClose(e.getKey() + " gradient", e.getValue(), grads.get(1).get(e.getKey()));
            expertGrads += e.getKey().contains(".experts") ? 1 : 0;
        }
        assertTrue(expertGrads > 0, "the fixture adapter trains expert projections: " + grads.get(0).keySet());
    }

    @Test
    void quantizedFixtureMatchesTheFusedPerExpertPath() {
        var dir = TestSafetensors.fixtures().resolve("qwen3_moe");
        var cfg = AdapterConfig.read(dir.resolve("adapter"));
        float[] want = null;
        Map<String, float[]> wantGrads = null;
        for (int chunk : new int[]{-1, 3}) {   // -1: per expert, host routing, fused quantized products (chunks 1 and E: the ragged test)
            Qwen3Model m = QuantizedExpertsTest.load(QuantFormats.byName("int4-g32"));
            m.setGroupedExperts(chunk >= 0);
            m.setExpertChunk(Math.max(chunk, 0));
            var adapter = LoraAdapter.load(cfg, new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), m,
                    TensorAllocator.heap());
            var base = LoraFixtureTest.setup("qwen3_moe");
            var s = new LoraFixtureTest.Setup(m, adapter, base.ref(), base.seqs());
            float[] logits = m.forwardTrain(s.seqs(), false).logits().toFloatArray();
            Map<String, float[]> grads = LoraFixtureTest.gradients(s, false);
            if (want == null) {
                want = logits;
                wantGrads = grads;
                continue;
            }
            assertClose("int4 logits, chunk " + chunk, want, logits);
            for (var e : wantGrads.entrySet()) {
                assertClose(e.getKey() + " gradient, chunk " + chunk, e.getValue(), grads.get(e.getKey()));
            }
        }
    }

    /** Experts 4..7 never win the router (negative rows against positive inputs): ragged groups with empty experts. */
    @Test
    void raggedRoutingWithEmptyExpertsMatchesForwardAndBackward() {
        for (int tokens : new int[]{1, 7}) {
            for (int chunk : new int[]{0, 1, 3, 8}) {   // 0: each quantized expert through its own product
                Block ref = Block.random(11, chunk > 0);
                Block got = Block.random(11, chunk > 0);
                got.moe.setExpertChunk(chunk);
                ref.moe.setGrouped(false);
                SplittableRandom r = new SplittableRandom(5 + tokens);
                Tensor x = rand(r, 0.1f, 1f, tokens, Block.H);
                Tensor dout = rand(r, -1f, 1f, tokens, Block.H);
                float[][] a = ref.run(x, dout);
                float[][] b = got.run(x, dout);
                SparseMoe.Tape t = got.lastTape;
                assertTrue(t.grouped != null, "the grouped path ran");
                int[] off = t.grouped.experts.offsets();
                for (int e = 4; e < 8; e++) {
                    assertEquals(0, off[e + 1] - off[e], "expert " + e + " has no pairs");
                }
                assertEquals(tokens * 2, off[8], "pairs");
                String what = tokens + " tokens, chunk " + chunk;
                assertClose("out, " + what, a[0], b[0]);
                assertClose("dx, " + what, a[1], b[1]);
                double total = 0;
                for (int i = 2; i < a.length; i++) {   // experts without pairs have zero gradients on both paths
                    check("LoRA gradient " + (i - 2) + ", " + what, a[i], b[i]);
                    for (float v : a[i]) {
                        total += Math.abs(v);
                    }
                }
                assertTrue(total > 0, "LoRA gradients of " + what + " are all zero");
            }
        }
    }

    /**
     * An inference forward offers its nine expert products (gate, up, down and each LoRA's A and B) to the backend from the
     * device offsets ({@link Backend#moeExpertMatmulRouted}) and reads the offsets on the host only at the first one the
     * backend declines, taking every later product from the host: a backend that takes the first {@code take} products is
     * offered min(take + 1, 9), and the output is bit for bit that of a backend that takes none, whichever it declines.
     */
    @Test
    void inferenceProductsTakeTheDeviceOffsetsUntilTheBackendDeclines() {
        Tensor x = rand(new SplittableRandom(61), 0.1f, 1f, 7, Block.H);
        float[] want = null;
        for (int take : new int[]{0, 1, 2, 5, 8, 9}) {
            int[] offered = new int[1];
            Backend cpu = Backends.cpu();
            Backend b = (Backend) java.lang.reflect.Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[]{Backend.class},
                    (proxy, m, args) -> {
                        if (!m.getName().equals("moeExpertMatmulRouted")) {
                            try {
                                return m.invoke(cpu, args);
                            } catch (java.lang.reflect.InvocationTargetException e) {
                                throw e.getCause();
                            }
                        }
                        if (offered[0]++ >= take) {
                            return false;
                        }
                        // args: xs, experts, offsets (device), scale, ys, accumulate
                        long[] o = ((Tensor) args[2]).toLongArray();
                        int[] offsets = new int[o.length];
                        for (int i = 0; i < o.length; i++) {
                            offsets[i] = (int) o[i];
                        }
                        var w = (org.orbitrl.kernels.ExpertWeights) args[1];
                        if ((Boolean) args[5]) {
                            cpu.moeExpertMatmulAccumulate((Tensor) args[0], w, offsets, (Float) args[3], (Tensor) args[4], false);
                        } else {
                            cpu.moeExpertMatmul((Tensor) args[0], w, offsets, (Tensor) args[4], 0);
                        }
                        return true;
                    });
            Block bl = Block.random(11, false, b);
            Tensor out = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, 7, Block.H);
            bl.moe.forward(b, x, out, null, false);
            float[] got = out.toFloatArray();
            assertEquals(Math.min(take + 1, 9), offered[0], "products offered from the device offsets when the backend takes " + take);
            if (want == null) {
                want = got;
                assertTrue(check("inference output", want, want) > 0, "the output is all zeros");
            } else {
                for (int i = 0; i < want.length; i++) {
                    assertEquals(Float.floatToIntBits(want[i]), Float.floatToIntBits(got[i]),
                            "output [" + i + "] when the backend takes the first " + take + " products");
                }
            }
        }
    }

    /** A Qwen3-MoE block of 8 f32 (or int4-g32) experts (hidden 64, intermediate 32, top 2, renormalised) with LoRA on every expert projection. */
    static final class Block {
        static final int H = 64;
        static final int I = 32;
        static final int E = 8;
        final Backend b;
        SparseMoe moe;
        final List<LoraLinear> loras = new ArrayList<>();
        final List<Tensor> grads = new ArrayList<>();
        SparseMoe.Tape lastTape;

        Block(Backend b) {
            this.b = b;
        }

        static Block random(long seed, boolean quantized) {
            return random(seed, quantized, Backends.cpu());
        }

        /** The same block for the same seed on any backend (weights, adapters and gradients in its memory). */
        static Block random(long seed, boolean quantized, Backend backend) {
            SplittableRandom r = new SplittableRandom(seed);
            Block bl = new Block(backend);
            TensorAllocator mem = backend.allocator();
            float[] rw = new float[E * H];
            for (int e = 0; e < E; e++) {
                for (int c = 0; c < H; c++) {
                    rw[e * H + c] = e < 4 ? (float) r.nextDouble(0, 0.2) : (float) r.nextDouble(-0.2, 0);
                }
            }
            DenseMlp[] experts = new DenseMlp[E];
            for (int e = 0; e < E; e++) {
                experts[e] = new DenseMlp(bl.lora(r, "e" + e + ".gate", I, H, quantized), bl.lora(r, "e" + e + ".up", I, H, quantized),
                        bl.lora(r, "e" + e + ".down", H, I, quantized));
            }
            bl.moe = new SparseMoe(new Linear("router", Weight.of(mem.upload(MemoryCategory.BASE_WEIGHTS, Tensor.of(rw, E, H))), null),
                    experts, 2, true);
            return bl;
        }

        Linear lora(SplittableRandom r, String name, int out, int in, boolean quantized) {
            TensorAllocator mem = b.allocator();
            Tensor w = rand(r, -0.3f, 0.3f, out, in);
            Weight base = quantized ? Weight.of(Placement.quantized(mem, QuantFormats.byName("int4-g32").quantize(w)))
                    : Weight.of(mem.upload(MemoryCategory.BASE_WEIGHTS, w));
            Linear l = new Linear(name, base, null);
            int rank = 4;
            Tensor ga = mem.allocate(MemoryCategory.ADAPTER_GRADS, DType.F32, rank, in);
            Tensor gb = mem.allocate(MemoryCategory.ADAPTER_GRADS, DType.F32, out, rank);
            LoraLinear h = new LoraLinear(mem.upload(MemoryCategory.ADAPTER_PARAMS, rand(r, -0.2f, 0.2f, rank, in)),
                    mem.upload(MemoryCategory.ADAPTER_PARAMS, rand(r, -0.2f, 0.2f, out, rank)), ga, gb, 0.5f, () -> true);
            l.setAdapter(h);
            loras.add(h);
            grads.add(ga);
            grads.add(gb);
            return l;
        }

        /** out, dx, then every LoRA gradient. */
        float[][] run(Tensor x, Tensor dout) {
            int n = x.size(0);
            TensorAllocator mem = b.allocator();
            Tensor out = mem.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, H);
            Tensor dx = mem.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, H);
            lastTape = new SparseMoe.Tape();
            moe.forward(b, mem.upload(MemoryCategory.ACTIVATIONS, x), out, lastTape);
            moe.backward(b, lastTape, mem.upload(MemoryCategory.ACTIVATIONS, dout), dx);
            float[][] res = new float[2 + grads.size()][];
            res[0] = mem.toHost(out).toFloatArray();
            res[1] = mem.toHost(dx).toFloatArray();
            for (int i = 0; i < grads.size(); i++) {
                res[2 + i] = mem.toHost(grads.get(i)).toFloatArray();
            }
            return res;
        }
    }

    static Tensor rand(SplittableRandom r, float lo, float hi, int... shape) {
        int n = 1;
        for (int d : shape) {
            n *= d;
        }
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) r.nextDouble(lo, hi);
        }
        long[] s = new long[shape.length];
        for (int i = 0; i < s.length; i++) {
            s[i] = shape[i];
        }
        return Tensor.of(v, s);
    }

    static void assertClose(String what, float[] ref, float[] got) {
        assertTrue(check(what, ref, got) > 0, what + " is all zeros");
    }

    /** Fails on an element off by more than ATOL + RTOL·|ref|; returns Σ|ref|. */
    static double check(String what, float[] ref, float[] got) {
        assertEquals(ref.length, got.length, what + " length");
        int bad = 0;
        double norm = 0;
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < ref.length; i++) {
            norm += Math.abs(ref[i]);
            float d = Math.abs(ref[i] - got[i]);
            if (!(d <= ATOL + RTOL * Math.abs(ref[i]))) {
                if (bad++ < 5) {
                    sb.append(String.format("  [%d] ref %.7f got %.7f (|d| %.2e)%n", i, ref[i], got[i], d));
                }
            }
        }
        if (bad > 0) {
            fail(what + ": " + bad + " of " + ref.length + " elements off by more than " + ATOL + " + " + RTOL + "·|ref|\n" + sb);
        }
        return norm;
    }
}
