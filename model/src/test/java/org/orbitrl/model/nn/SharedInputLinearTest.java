package org.orbitrl.model.nn;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.adapter.LoraLinear;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

/**
 * {@link Linear#forwardShared}: layers that read the same x (q, k and v) give the bits of each layer's own forward, with
 * their base products in one {@link Backend#matmulShared} and their LoRAs' A products in another; a hook that is not
 * low-rank still adds its delta, and one that transforms the input sends every layer through its own forward. The
 * backend's calls are recorded through a proxy over the CPU backend.
 */
class SharedInputLinearTest {
    private final Backend cpu = Backends.cpu();
    private final List<String> calls = new ArrayList<>();
    private final Backend recorded = (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[]{Backend.class},
            (proxy, method, args) -> {
                calls.add(method.getName());
                try {
                    return method.invoke(cpu, args);
                } catch (InvocationTargetException e) {
                    throw e.getCause();
                }
            });

    @AfterEach
    void closeBackend() {
        cpu.close();
    }

    @Test
    void baseAndLoraProductsAreSharedAndTheNumbersAreEachLayersOwn() {
        SplittableRandom r = new SplittableRandom(41);
        int m = 5;
        int in = 48;
        Tensor x = rand(r, m, in);
        Linear q = layer(r, "q", 32, in, true);
        Linear k = layer(r, "k", 8, in, false);
        Linear v = layer(r, "v", 8, in, false);
        q.setAdapter(lora(r, 4, 32, in, 0.5f));
        v.setAdapter(lora(r, 4, 8, in, 2f));
        Linear[] layers = {q, k, v};

        float[][] want = separately(layers, x);
        calls.clear();
        float[][] got = shared(layers, x);
        for (int i = 0; i < layers.length; i++) {
            assertArrayEquals(bits(want[i]), bits(got[i]), layers[i] + ": shared against its own forward");
        }
        assertEquals(2, calls.stream().filter("matmulShared"::equals).count(), "base and A products shared: " + calls);
        assertEquals(0, calls.stream().filter("matmul"::equals).count(), "no product of its own: " + calls);
        assertEquals(2, calls.stream().filter("matmulAxpy"::equals).count(), "a B product a LoRA: " + calls);
    }

    @Test
    void aHookThatIsNotLowRankAddsItsOwnDeltaAndOneThatTransformsTheInputRunsEachLayerAlone() {
        SplittableRandom r = new SplittableRandom(42);
        Tensor x = rand(r, 3, 16);
        Linear q = layer(r, "q", 12, 16, false);
        Linear k = layer(r, "k", 4, 16, false);
        q.setAdapter(lora(r, 2, 12, 16, 1f));
        k.setAdapter(new Shift(false));
        Linear[] layers = {q, k};
        float[][] want = separately(layers, x);
        calls.clear();
        float[][] got = shared(layers, x);
        for (int i = 0; i < layers.length; i++) {
            assertArrayEquals(bits(want[i]), bits(got[i]), layers[i] + " with a non-low-rank hook beside a LoRA");
        }
        assertEquals(2, calls.stream().filter("matmulShared"::equals).count(), calls.toString());

        k.setAdapter(new Shift(true));
        want = separately(layers, x);
        calls.clear();
        got = shared(layers, x);
        for (int i = 0; i < layers.length; i++) {
            assertArrayEquals(bits(want[i]), bits(got[i]), layers[i] + " beside a hook that transforms the input");
        }
        assertEquals(0, calls.stream().filter("matmulShared"::equals).count(), "each layer alone: " + calls);
    }

    /**
     * A backend with a fused form ({@link Backend#matmulLowRank}, here the same steps on the CPU: x·Wᵀ, then each term's
     * s·(x·Aᵀ)·Bᵀ added) gets q, k and v in one call: each weight with its own layer's LoRA factors and scale (null for
     * the layer without one), the biases added after it; the numbers are the layers' own forwards within f32 rounding (the
     * bias and the term are added in the other order). One adapted layer alone takes it too, and a call without any
     * low-rank term never reaches it.
     */
    @Test
    void aBackendsFusedFormGetsEachLayersWeightAndTerm() {
        SplittableRandom r = new SplittableRandom(43);
        Tensor x = rand(r, 6, 32);
        Linear q = layer(r, "q", 24, 32, true);
        Linear k = layer(r, "k", 8, 32, false);
        Linear v = layer(r, "v", 8, 32, false);
        q.setAdapter(lora(r, 4, 24, 32, 0.5f));
        v.setAdapter(lora(r, 2, 8, 32, 2f));
        Linear[] layers = {q, k, v};
        float[][] want = separately(layers, x);

        List<Backend.LowRankTerm[]> fused = new ArrayList<>();
        List<Tensor[]> weights = new ArrayList<>();
        Backend withFusedForm = (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[]{Backend.class},
                (proxy, method, args) -> {
                    calls.add(method.getName());
                    if (method.getName().equals("matmulLowRank")) {
                        Tensor in = (Tensor) args[0];
                        Tensor[] ws = (Tensor[]) args[1];
                        Backend.LowRankTerm[] terms = (Backend.LowRankTerm[]) args[2];
                        Tensor[] ys = (Tensor[]) args[3];
                        fused.add(terms.clone());
                        weights.add(ws.clone());
                        for (int i = 0; i < ws.length; i++) {
                            cpu.matmul(in, ws[i], ys[i]);
                            if (terms[i] != null) {
                                Tensor xa = cpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, in.size(0), terms[i].a().size(0));
                                cpu.matmul(in, terms[i].a(), xa);
                                cpu.matmulAxpy(xa, terms[i].b(), terms[i].scale(), ys[i]);
                            }
                        }
                        return true;
                    }
                    try {
                        return method.invoke(cpu, args);
                    } catch (InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        Tensor[] ys = new Tensor[layers.length];
        for (int i = 0; i < layers.length; i++) {
            ys[i] = cpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, x.size(0), layers[i].out());
        }
        calls.clear();
        Linear.forwardShared(withFusedForm, x, layers, ys);
        assertEquals(1, fused.size(), "one fused call for q, k and v: " + calls);
        assertEquals(0, calls.stream().filter("matmulShared"::equals).count(), calls.toString());
        Backend.LowRankTerm[] terms = fused.get(0);
        assertEquals(0.5f, terms[0].scale());
        assertNull(terms[1], "k has no adapter");
        assertEquals(2f, terms[2].scale());
        assertEquals(2, terms[2].a().size(0), "v's rank");
        for (int i = 0; i < layers.length; i++) {
            assertEquals(layers[i].out(), weights.get(0)[i].size(0), "weight " + i + " is " + layers[i] + "'s");
            float[] got = ys[i].toFloatArray();
            for (int j = 0; j < got.length; j++) {
                assertEquals(want[i][j], got[j], 1e-5 * (1 + Math.abs(want[i][j])), layers[i] + " element " + j);
            }
        }

        Tensor y = cpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, x.size(0), q.out());
        q.forward(withFusedForm, x, y);
        assertEquals(2, fused.size(), "an adapted layer alone: " + calls);
        Tensor yk = cpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, x.size(0), k.out());
        k.forward(withFusedForm, x, yk);
        q.setAdapter(null);
        v.setAdapter(null);
        Linear.forwardShared(withFusedForm, x, layers, ys);
        assertEquals(2, fused.size(), "no low-rank term, no fused call: " + calls);
    }

    /** Adds 0.25 to every output; with {@code transforms}, also doubles the input the base weight sees. */
    private final class Shift implements Linear.AdapterHook {
        private final boolean transforms;

        Shift(boolean transforms) {
            this.transforms = transforms;
        }

        @Override
        public boolean enabled() {
            return true;
        }

        @Override
        public boolean transformsInput() {
            return transforms;
        }

        @Override
        public Tensor baseInput(Backend backend, Tensor x) {
            if (!transforms) {
                return x;
            }
            Tensor c = backend.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, x.shape());
            backend.add(x, x, c);
            return c;
        }

        @Override
        public void forward(Backend backend, Tensor x, Tensor y) {
            float[] v = y.toFloatArray();
            for (int i = 0; i < v.length; i++) {
                v[i] += 0.25f;
            }
            backend.allocator().copy(Tensor.of(v, y.shape()), y);
        }

        @Override
        public void backward(Backend backend, Tensor x, Tensor dy, Tensor dx) {
            throw new UnsupportedOperationException("forward only");
        }
    }

    private float[][] separately(Linear[] layers, Tensor x) {
        float[][] out = new float[layers.length][];
        for (int i = 0; i < layers.length; i++) {
            Tensor y = cpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, x.size(0), layers[i].out());
            layers[i].forward(recorded, x, y);
            out[i] = y.toFloatArray();
        }
        return out;
    }

    private float[][] shared(Linear[] layers, Tensor x) {
        Tensor[] ys = new Tensor[layers.length];
        for (int i = 0; i < layers.length; i++) {
            ys[i] = cpu.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, x.size(0), layers[i].out());
        }
        Linear.forwardShared(recorded, x, layers, ys);
        float[][] out = new float[layers.length][];
        for (int i = 0; i < layers.length; i++) {
            out[i] = ys[i].toFloatArray();
        }
        return out;
    }

    private Linear layer(SplittableRandom r, String name, int out, int in, boolean bias) {
        return new Linear(name, Weight.of(rand(r, out, in)), bias ? rand(r, out) : null);
    }

    private LoraLinear lora(SplittableRandom r, int rank, int out, int in, float scale) {
        TensorAllocator a = cpu.allocator();
        return new LoraLinear(rand(r, rank, in), rand(r, out, rank), a.allocate(MemoryCategory.ADAPTER_GRADS, DType.F32, rank, in),
                a.allocate(MemoryCategory.ADAPTER_GRADS, DType.F32, out, rank), scale, () -> true);
    }

    private static Tensor rand(SplittableRandom r, long... shape) {
        int n = 1;
        for (long d : shape) {
            n *= d;
        }
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) r.nextDouble(-1, 1);
        }
        return Tensor.of(v, shape);
    }

    private static int[] bits(float[] v) {
        int[] b = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            b[i] = Float.floatToRawIntBits(v[i]);
        }
        return b;
    }
}
