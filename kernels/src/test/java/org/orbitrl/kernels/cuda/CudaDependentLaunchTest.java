package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Launcher;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Programmatic dependent launch on a chain of the decode step's kernels (embedding, RMSNorm, the
 * bf16 GEMV, the INT4 GEMV, SwiGLU, the accumulating GEMV, RMSNorm, the lm_head GEMV, argmax
 * feeding the next step's embedding): launched one by one with dependent launches off (the
 * reference), one by one with them on, and captured as a graph with them on and replayed, step
 * after step from the same token ids, gives bit-identical logits and ids; every step's logits match
 * the scalar backend's on the same ids within {@code 1e-6 + 1e-4·max|ref|}. Intermediate buffers
 * are NaN-poisoned before each run, so a kernel that read its predecessor's output before that was
 * written would show. Also checks that the dependent path was taken (launch count) and that the
 * capture holds programmatic edges with dependent launches on and none with them off.
 */
class CudaDependentLaunchTest extends CudaTestBase {
    private static final int M = 3;      // tokens
    private static final int H = 256;    // hidden
    private static final int I = 192;    // intermediate
    private static final int V = 320;    // vocabulary
    private static final float EPS = 1e-6f;
    private static final int STEPS = 4;
    /** Flagged launches a step issues: embedding, rmsnorm x2, bgemv x3, qgemv, swiglu, argmax. */
    private static final int DEPENDENT_PER_STEP = 9;

    private final SplittableRandom r = rng(97);
    private final float[] table = randn(r, 1f, V, H).toFloatArray();            // [V, H]
    private final float[] norm1 = randn(r, 1f, H).toFloatArray();               // [H]
    private final float[] norm2 = randn(r, 1f, H).toFloatArray();               // [H]
    private final Tensor gate = Tensor.of(bf16Round(randn(r, 0.1f, I, H).toFloatArray()), I, H).to(DType.BF16);  // [I, H]
    private final QuantizedTensor up = CudaQuantTest.random("int4-g32", r, I, H);                               // [I, H]
    private final Tensor down = Tensor.of(bf16Round(randn(r, 0.1f, H, I).toFloatArray()), H, I).to(DType.BF16);  // [H, I]
    private final Tensor head = Tensor.of(bf16Round(randn(r, 0.1f, V, H).toFloatArray()), V, H).to(DType.BF16);  // [V, H]
    private final int[] firstIds = {5, 211, 64};

    /** The device side of the chain. */
    private final class Chain {
        final Tensor table = dev(Tensor.of(CudaDependentLaunchTest.this.table, V, H));
        final Tensor n1 = dev(Tensor.of(norm1, H));
        final Tensor n2 = dev(Tensor.of(norm2, H));
        final Tensor wg = dev(gate);
        final QuantizedTensor wu = gpu.toDevice(up);
        final Tensor wd = dev(down);
        final Tensor lm = dev(head);
        final Tensor ids = dev(Tensor.ofInts(firstIds, M));                 // i32 [M]
        final Tensor x = poisoned(DType.F32, M, H);
        final Tensor h = poisoned(DType.F32, M, H);
        final Tensor g = poisoned(DType.F32, M, I);
        final Tensor u = poisoned(DType.F32, M, I);
        final Tensor a = poisoned(DType.F32, M, I);
        final Tensor logits = poisoned(DType.F32, M, V);

        void step() {
            step(gpu);
        }

        /** The chain on backend {@code be} (gpu's or a sibling sharing its memory). */
        void step(CudaBackend be) {
            be.embedding(table, ids, x);
            be.rmsNorm(x, n1, EPS, h);
            be.matmul(h, wg, g);
            be.matmulQuantized(h, wu, u);
            be.swiglu(g, u, a);
            be.matmulAccumulate(a, wd, x);
            be.rmsNorm(x, n2, EPS, h);
            be.matmul(h, lm, logits);
            be.argmax(logits, ids);
        }

        /** First ids back, every intermediate NaN again. */
        void reset() {
            gpu.copyToDevice(Tensor.ofInts(firstIds, M), ids);
            for (Tensor t : new Tensor[]{x, h, g, u, a, logits}) {
                Tensor nan = Tensor.allocate(Arena.ofAuto(), DType.F32, t.shape());
                nan.fill(Float.NaN);
                gpu.copyToDevice(nan, t);
            }
        }

        void close() {
            gpu.free(wu);
        }
    }

    @Test
    void dependentChainEqualsPlainLaunchesAndScalarBackend() {
        boolean before = gpu.dependentLaunches();
        assumeTrue(gpu.dependentLaunchesSupported(), () -> "no programmatic dependent launch here: " + gpu.kernelInfo());
        Chain c = new Chain();
        try {
            gpu.dependentLaunches(false);
            long n0 = Launcher.dependentLaunches();
            float[][] refLogits = new float[STEPS][];
            long[][] refIds = new long[STEPS][];
            long[] stepIds = toLongs(firstIds);
            c.reset();
            for (int p = 0; p < STEPS; p++) {
                c.step();
                refLogits[p] = gpu.toHost(c.logits).toFloatArray();
                refIds[p] = gpu.toHost(c.ids).toLongArray();
                checkAgainstScalar(p, stepIds, refLogits[p], refIds[p]);
                stepIds = refIds[p];
            }
            assertEquals(n0, Launcher.dependentLaunches(), "no dependent launch while dependent launches are off");

            gpu.dependentLaunches(true);
            long n1 = Launcher.dependentLaunches();
            c.reset();
            for (int p = 0; p < STEPS; p++) {
                c.step();
                assertArrayEquals(refLogits[p], gpu.toHost(c.logits).toFloatArray(), 0f, "step " + p + ": dependent launches, logits");
                assertArrayEquals(refIds[p], gpu.toHost(c.ids).toLongArray(), "step " + p + ": dependent launches, ids");
            }
            assertEquals((long) DEPENDENT_PER_STEP * STEPS, Launcher.dependentLaunches() - n1,
                    "launches through cuLaunchKernelEx: every kernel of the chain, every step");

            c.reset();
            try (CudaGraph graph = CudaGraph.capture(gpu.stream(), c::step)) {
                GraphEdges.Counts edges = GraphEdges.of(graph);
                System.out.println("captured chain with dependent launches: " + edges);
                if (edges != null) {
                    assertTrue(edges.programmatic() >= DEPENDENT_PER_STEP - 1,
                            "programmatic edges between the chain's kernels: " + edges);
                }
                for (int p = 0; p < STEPS; p++) {
                    graph.launch(gpu.stream());
                    assertArrayEquals(refLogits[p], gpu.toHost(c.logits).toFloatArray(), 0f, "step " + p + ": graph replay, logits");
                    assertArrayEquals(refIds[p], gpu.toHost(c.ids).toLongArray(), "step " + p + ": graph replay, ids");
                }
            }

            gpu.dependentLaunches(false);
            try (CudaGraph graph = CudaGraph.capture(gpu.stream(), c::step)) {
                GraphEdges.Counts edges = GraphEdges.of(graph);
                System.out.println("captured chain without dependent launches: " + edges);
                if (edges != null) {
                    assertEquals(0, edges.programmatic(), "programmatic edges with dependent launches off: " + edges);
                    assertTrue(edges.full() >= DEPENDENT_PER_STEP - 1, "full edges between the chain's kernels: " + edges);
                }
            }
        } finally {
            gpu.dependentLaunches(before);
            c.close();
        }
    }

    /**
     * Kernels built to let the next kernel start only as their blocks exit ({@code -Dorbit.cuda.pdlTrigger=exit}, a sibling
     * backend's own kernels) give the chain's bits with dependent launches on, launched one by one and as a replayed
     * graph, against gpu's plain launches; the sibling's kernels are the ones built that way.
     */
    @Test
    void kernelsThatLetTheNextStartAtTheirExitGiveTheSameChain() {
        assumeTrue(gpu.dependentLaunchesSupported(), () -> "no programmatic dependent launch here: " + gpu.kernelInfo());
        boolean before = gpu.dependentLaunches();
        Chain c = new Chain();
        try (CudaBackend exit = sibling("orbit.cuda.pdlTrigger", "exit")) {
            assertTrue(exit.context().kernels.triggersAtExit() && !gpu.context().kernels.triggersAtExit(),
                    "the sibling's kernels let the next start at their exit, gpu's at their start");
            gpu.dependentLaunches(false);
            float[][] refLogits = new float[STEPS][];
            long[][] refIds = new long[STEPS][];
            c.reset();
            for (int p = 0; p < STEPS; p++) {
                c.step();
                refLogits[p] = gpu.toHost(c.logits).toFloatArray();
                refIds[p] = gpu.toHost(c.ids).toLongArray();
            }
            exit.dependentLaunches(true);
            long n0 = Launcher.dependentLaunches();
            c.reset();
            gpu.synchronize();
            for (int p = 0; p < STEPS; p++) {
                c.step(exit);
                assertArrayEquals(refLogits[p], exit.toHost(c.logits).toFloatArray(), 0f, "step " + p + ": trigger at exit, logits");
                assertArrayEquals(refIds[p], exit.toHost(c.ids).toLongArray(), "step " + p + ": trigger at exit, ids");
            }
            assertEquals((long) DEPENDENT_PER_STEP * STEPS, Launcher.dependentLaunches() - n0, "every kernel of the chain a dependent launch");
            c.reset();
            gpu.synchronize();
            try (CudaGraph graph = CudaGraph.capture(exit.stream(), () -> c.step(exit))) {
                for (int p = 0; p < STEPS; p++) {
                    graph.launch(exit.stream());
                    assertArrayEquals(refLogits[p], exit.toHost(c.logits).toFloatArray(), 0f, "step " + p + ": trigger at exit, replay");
                    assertArrayEquals(refIds[p], exit.toHost(c.ids).toLongArray(), "step " + p + ": trigger at exit, replay ids");
                }
            }
            exit.synchronize();
        } finally {
            gpu.dependentLaunches(before);
            c.close();
        }
    }

    /**
     * A traced build ({@code -Dorbit.cuda.trace=on}, a sibling backend's own kernels) gives the chain's bits and records
     * each of its launches once a step, launched one by one and as a replayed graph: nine launches after each reset,
     * each with its blocks, the same kernel where the chain repeats an operation (the two norms, the first and last
     * bf16 products), every block's start no later than its end, and, for the dependent launches, the wait of each
     * returning no earlier than the last recorded end of the launch before it (what {@code griddepcontrol.wait} promises).
     * The untraced backend refuses to read a timeline, naming the switch.
     */
    @Test
    void aTracedBuildRecordsEveryLaunchOfTheChainAndKeepsItsBits() {
        assumeTrue(gpu.dependentLaunchesSupported(), () -> "no programmatic dependent launch here: " + gpu.kernelInfo());
        boolean before = gpu.dependentLaunches();
        Chain c = new Chain();
        try (CudaBackend traced = sibling("orbit.cuda.trace", "on")) {
            assertTrue(traced.traced() && !gpu.traced(), "the sibling's kernels are traced, gpu's are not");
            IllegalStateException refused = org.junit.jupiter.api.Assertions.assertThrows(IllegalStateException.class, gpu::kernelTimeline);
            assertTrue(refused.getMessage().contains("orbit.cuda.trace=on"), refused.getMessage());
            gpu.dependentLaunches(false);
            float[][] refLogits = new float[STEPS][];
            c.reset();
            for (int p = 0; p < STEPS; p++) {
                c.step();
                refLogits[p] = gpu.toHost(c.logits).toFloatArray();
            }
            traced.dependentLaunches(true);
            c.reset();
            gpu.synchronize();
            for (int p = 0; p < STEPS; p++) {
                traced.traceReset();
                c.step(traced);
                KernelTimeline t = traced.kernelTimeline();
                assertArrayEquals(refLogits[p], traced.toHost(c.logits).toFloatArray(), 0f, "step " + p + ": traced, logits");
                checkTimeline(t, "step " + p);
            }
            c.reset();
            gpu.synchronize();
            try (CudaGraph graph = CudaGraph.capture(traced.stream(), () -> c.step(traced))) {
                for (int p = 0; p < STEPS; p++) {
                    traced.traceReset();
                    graph.launch(traced.stream());
                    KernelTimeline t = traced.kernelTimeline();
                    assertArrayEquals(refLogits[p], traced.toHost(c.logits).toFloatArray(), 0f, "step " + p + ": traced replay, logits");
                    checkTimeline(t, "replay " + p);
                }
            }
        } finally {
            gpu.dependentLaunches(before);
            c.close();
        }
    }

    private static void checkTimeline(KernelTimeline t, String what) {
        java.util.List<KernelTimeline.Launch> ls = t.launches();
        assertEquals(DEPENDENT_PER_STEP, ls.size(), what + ": launches " + ls);
        assertEquals(0, t.dropped(), what);
        assertEquals(ls.get(1).name(), ls.get(6).name(), what + ": the two norms' kernel");
        assertEquals(ls.get(2).name(), ls.get(7).name(), what + ": the first and last bf16 products' kernel");
        for (int i = 0; i < ls.size(); i++) {
            KernelTimeline.Launch l = ls.get(i);
            assertTrue(!l.name().isEmpty() && !l.name().startsWith("grid "), what + ": launch " + i + " named by its block 0: " + l);
            assertTrue(l.blocks() >= 1 && l.sms() >= 1 && l.sms() <= l.blocks(), what + ": launch " + i + " blocks: " + l);
            assertTrue(l.firstStart() <= l.medianStart() && l.medianStart() <= l.lastStart() && l.firstStart() <= l.medianEnd()
                    && l.medianEnd() <= l.lastEnd(), what + ": launch " + i + " times in order: " + l);
            if (i > 0) {
                assertTrue(l.waited(), what + ": launch " + i + " is a dependent launch: " + l);
                assertTrue(l.medianWaited() >= ls.get(i - 1).lastEnd(),
                        what + ": launch " + i + "'s wait returns after launch " + (i - 1) + " ends: " + l + " after " + ls.get(i - 1));
            }
        }
    }

    /** Step {@code p}'s logits from {@code ids} on the scalar backend, and the ids as argmax of the GPU's logits. */
    private void checkAgainstScalar(int p, long[] ids, float[] gotLogits, long[] gotIds) {
        int[] in = new int[M];
        for (int i = 0; i < M; i++) {
            in[i] = Math.toIntExact(ids[i]);
        }
        Tensor x = host(M, H);
        cpu.embedding(Tensor.of(table, V, H), Tensor.ofInts(in, M), x);
        Tensor h = host(M, H);
        cpu.rmsNorm(x, Tensor.of(norm1, H), EPS, h);
        Tensor g = host(M, I);
        cpu.matmul(h, gate, g);
        Tensor u = host(M, I);
        cpu.matmulQuantized(h, up, u);
        Tensor a = host(M, I);
        cpu.swiglu(g, u, a);
        Tensor d = host(M, H);
        cpu.matmul(a, down, d);
        float[] xv = x.toFloatArray();
        float[] dv = d.toFloatArray();
        for (int i = 0; i < xv.length; i++) {
            xv[i] += dv[i];
        }
        Tensor x2 = Tensor.of(xv, M, H);
        Tensor h2 = host(M, H);
        cpu.rmsNorm(x2, Tensor.of(norm2, H), EPS, h2);
        Tensor logits = host(M, V);
        cpu.matmul(h2, head, logits);
        float[] ref = logits.toFloatArray();
        double scale = 0;
        for (float v : ref) {
            scale = Math.max(scale, Math.abs(v));
        }
        assertClose("step " + p + " logits against the scalar backend", ref, gotLogits, 1e-6 + 1e-4 * scale, 0);
        for (int i = 0; i < M; i++) {
            int best = 0;
            for (int j = 1; j < V; j++) {
                if (gotLogits[i * V + j] > gotLogits[i * V + best]) {
                    best = j;
                }
            }
            assertEquals(best, gotIds[i], "step " + p + " token " + i + ": argmax of the logits");
        }
    }

    private static Tensor host(long... shape) {
        return Tensor.allocate(Arena.ofAuto(), DType.F32, shape);
    }

    private static long[] toLongs(int[] v) {
        long[] o = new long[v.length];
        for (int i = 0; i < v.length; i++) {
            o[i] = v[i];
        }
        return o;
    }
}
