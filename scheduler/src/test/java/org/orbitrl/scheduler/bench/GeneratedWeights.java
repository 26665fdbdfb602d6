package org.orbitrl.scheduler.bench;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.nn.WeightSource;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.stream.IntStream;

/**
 * A model's weights generated when the loader asks for each tensor (seeded by name), so the host never holds more than
 * a few tensors: a subclass names every tensor with its kind and shape ({@link #put}, {@link #expert}), here they are
 * made. Random matrices are bf16 uniform with standard deviation 0.02, norms 1, biases 0.02 uniform in f32, and INT4
 * group-32 expert projections come directly in the compressed-tensors layout ({@code weight_packed} random codes,
 * {@code weight_scale} a constant chosen so the dequantized weights have standard deviation about 0.02,
 * {@code weight_shape}), so nothing is quantized on the host.
 */
abstract class GeneratedWeights implements WeightSource {
    private static final double HALF_WIDTH = 0.02 * Math.sqrt(3);          // uniform(-a, a) has std a/sqrt(3)
    static final float CODE_SCALE = 0.02f / 4.61f;                          // codes uniform in -8..7 have std 4.61

    /** How a tensor is made. */
    enum Kind { ONES, RANDOM, BIAS, PACKED, SCALE, SHAPE }

    private record Entry(Kind kind, long[] shape) {
    }

    private final Map<String, Entry> entries = new HashMap<>();
    private final String model;
    private final long seed;
    private int lastLayer = -1;
    private long generatingNanos;

    /** {@code model}: the architecture's name, for messages. */
    GeneratedWeights(String model, long seed) {
        this.model = model;
        this.seed = seed;
    }

    final void put(String name, Kind kind, long... shape) {
        entries.put(name, new Entry(kind, shape));
    }

    /** An INT4 group-32 expert projection [out, in] in the compressed-tensors layout. */
    final void expert(String module, long out, long in) {
        if (in % 32 != 0) {
            throw new IllegalArgumentException(module + ": input width " + in + " is not a multiple of the INT4 group 32");
        }
        put(module + ".weight_packed", Kind.PACKED, out, in / 8);
        put(module + ".weight_scale", Kind.SCALE, out, in / 32);
        put(module + ".weight_shape", Kind.SHAPE, out, in);
    }

    @Override
    public boolean has(String name) {
        return entries.containsKey(name);
    }

    @Override
    public Set<String> names() {
        return entries.keySet();
    }

    @Override
    public Tensor tensor(String name, long... shape) {
        Entry e = entries.get(name);
        if (e == null) {
            throw new IllegalArgumentException("random " + model + " weights: no tensor " + name);
        }
        if (e.kind != Kind.SHAPE && !Arrays.equals(e.shape, shape)) {
            throw new IllegalArgumentException("random " + model + " weights: " + name + " is " + Arrays.toString(e.shape)
                    + ", asked for " + Arrays.toString(shape));
        }
        collectPerLayer(name);
        long t0 = System.nanoTime();
        Tensor t = generate(e, name, shape);
        generatingNanos += System.nanoTime() - t0;
        return t;
    }

    /** Seconds spent generating tensors (the rest of a model build is placing them). */
    double generatingSeconds() {
        return generatingNanos / 1e9;
    }

    private Tensor generate(Entry e, String name, long[] shape) {
        long s = seed * 0x9E3779B97F4A7C15L + name.hashCode();
        return switch (e.kind) {
            case ONES -> constantBf16(1f, shape);
            case RANDOM -> random(s, shape[0], shape[1]);
            case BIAS -> random(s, 1, shape[0]).reshape(shape[0]).to(DType.F32);
            case PACKED -> codes(s, shape[0], shape[1]);
            case SCALE -> constantBf16(CODE_SCALE, shape);
            case SHAPE -> Tensor.ofInts(new int[]{(int) e.shape[0], (int) e.shape[1]}, 2);
        };
    }

    /** The loader uploads each tensor and drops it: a collection per layer returns their off-heap memory. */
    private void collectPerLayer(String name) {
        if (name.startsWith("model.layers.")) {
            int l = Integer.parseInt(name.substring(13, name.indexOf('.', 13)));
            if (l != lastLayer) {
                lastLayer = l;
                System.gc();
            }
        }
    }

    /** bf16 of {@code shape}, every element {@code v} (rounded to nearest even). */
    private static Tensor constantBf16(float v, long... shape) {
        Tensor t = Tensor.allocate(Arena.ofAuto(), DType.BF16, shape);
        int bits = Float.floatToRawIntBits(v);
        short b = (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16);
        MemorySegment m = t.segment();
        long n = t.numel();
        for (long i = 0; i < n; i++) {
            m.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, b);
        }
        return t;
    }

    /** bf16 [rows, cols], uniform, filled in parallel by blocks of rows. */
    private static Tensor random(long base, long rows, long cols) {
        Tensor t = Tensor.allocate(Arena.ofAuto(), DType.BF16, rows, cols);   // [rows, cols]
        MemorySegment m = t.segment();
        int block = 256;
        IntStream.range(0, (int) ((rows + block - 1) / block)).parallel().forEach(b -> {
            SplittableRandom rnd = new SplittableRandom(base + b);
            long end = Math.min(rows, (long) (b + 1) * block) * cols;
            for (long i = (long) b * block * cols; i < end; i++) {
                float f = (float) ((rnd.nextDouble() * 2 - 1) * HALF_WIDTH);
                m.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, (short) ((Float.floatToRawIntBits(f) + 0x8000) >>> 16));
            }
        });
        return t;
    }

    /** i32 [rows, words]: eight uniform 4-bit codes per word. */
    private static Tensor codes(long base, long rows, long words) {
        Tensor t = Tensor.allocate(Arena.ofAuto(), DType.I32, rows, words);  // [rows, words]
        MemorySegment m = t.segment();
        SplittableRandom rnd = new SplittableRandom(base);
        long n = rows * words;
        long i = 0;
        for (; i + 1 < n; i += 2) {
            m.setAtIndex(ValueLayout.JAVA_LONG_UNALIGNED, i / 2, rnd.nextLong());
        }
        if (i < n) {
            m.setAtIndex(ValueLayout.JAVA_INT_UNALIGNED, i, rnd.nextInt());
        }
        return t;
    }
}
