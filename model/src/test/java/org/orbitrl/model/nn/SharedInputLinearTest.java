package org.orbitrl.model.nn;

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
