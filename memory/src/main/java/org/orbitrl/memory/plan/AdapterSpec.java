package org.orbitrl.memory.plan;

import java.util.EnumSet;
import java.util.Locale;
import java.util.Set;
import org.orbitrl.kernels.DType;
import org.orbitrl.model.adapter.OftSettings;

/**
 * What trains: a LoRA or OFT adapter on the projections of some families, or (for comparison
 * only) every parameter of the model.
 */
public sealed interface AdapterSpec {

    /** The families an adapter targets unless told otherwise: every projection but the router. */
    Set<ParamFamily> DEFAULT_TARGETS = Set.copyOf(EnumSet.of(ParamFamily.ATTENTION, ParamFamily.DENSE_MLP,
            ParamFamily.SHARED_EXPERTS, ParamFamily.ROUTED_EXPERTS));

    /** Element type of the trainable tensors (and their gradients). */
    DType dtype();

    /** Trainable parameters this adapter adds for one projection group (0 if it does not target it). */
    long paramsFor(WeightGroup g);

    /** Total trainable parameters over a model's weights. */
    default long params(WeightInventory inv) {
        long n = 0;
        for (WeightGroup g : inv.main()) {
            n = Math.addExact(n, paramsFor(g));
        }
        return n;
    }

    /** Nothing trains (inference only). */
    record None() implements AdapterSpec {
        public DType dtype() {
            return DType.BF16;
        }

        public long paramsFor(WeightGroup g) {
            return 0;
        }

        @Override
        public String toString() {
            return "none";
        }
    }

    /**
     * LoRA of rank {@code rank}: {@code A [rank, in]} and {@code B [out, rank]} per targeted
     * projection, per expert for the routed experts (PEFT's {@code target_parameters} layout).
     */
    record Lora(int rank, Set<ParamFamily> targets, DType dtype) implements AdapterSpec {
        public Lora {
            targets = Set.copyOf(targets);
            if (rank <= 0) {
                throw new IllegalArgumentException("LoRA rank must be positive, got " + rank);
            }
            checkDtype(dtype);
        }

        public long paramsFor(WeightGroup g) {
            if (!g.linear() || !targets.contains(g.family())) {
                return 0;
            }
            return Math.multiplyExact((long) rank * (g.rows() + g.cols()), g.count());
        }

        @Override
        public String toString() {
            return "lora:" + rank + targetsSuffix(targets) + (dtype == DType.F32 ? ":f32" : "");
        }
    }

    /**
     * OFT with block size {@code blockSize}: each targeted projection's input dimension {@code in} is
     * rotated by {@code in/b'} orthogonal {@code b' x b'} blocks, each stored as its {@code b'(b'-1)/2}
     * skew-symmetric generator (PEFT's OFT), where {@code b'} is the block size the runtime builds for
     * that width: {@code b} where it divides {@code in}, else the divisor of {@code in} nearest to it
     * ({@link OftSettings#layout}, PEFT's {@code adjust_oft_parameters}).
     */
    record Oft(int blockSize, Set<ParamFamily> targets, DType dtype) implements AdapterSpec {
        public Oft {
            targets = Set.copyOf(targets);
            if (blockSize < 2) {
                throw new IllegalArgumentException("OFT block size must be at least 2, got " + blockSize);
            }
            checkDtype(dtype);
        }

        public long paramsFor(WeightGroup g) {
            if (!g.linear() || !targets.contains(g.family())) {
                return 0;
            }
            OftSettings.Layout l = layout(g);
            return Math.multiplyExact((long) l.storedBlocks() * l.elements(), g.count());
        }

        /**
         * Elements of the rotation blocks an OFT layer builds from its parameter for projection group {@code g}
         * ({@code [stored blocks, b', b']} f32 each; 0 if it does not target it).
         */
        public long rotationElementsFor(WeightGroup g) {
            if (!g.linear() || !targets.contains(g.family())) {
                return 0;
            }
            OftSettings.Layout l = layout(g);
            return Math.multiplyExact((long) l.storedBlocks() * l.blockSize() * l.blockSize(), g.count());
        }

        /** The split the runtime makes of {@code g}'s input width for this block size. */
        private OftSettings.Layout layout(WeightGroup g) {
            try {
                return OftSettings.ofBlockSize(blockSize).layout(Math.toIntExact(g.cols()));
            } catch (IllegalArgumentException | ArithmeticException e) {
                throw new IllegalArgumentException("adapter " + this + " on " + g.name() + " [" + g.rows() + ", "
                        + g.cols() + "]: " + e.getMessage(), e);
            }
        }

        @Override
        public String toString() {
            return "oft:" + blockSize + targetsSuffix(targets) + (dtype == DType.F32 ? ":f32" : "");
        }
    }

    /**
     * Every parameter trains, in bf16, with AdamW (f32 moments and master copy), sharded across the
     * training GPUs. Orbit does not run this; the planner has it to show why the adapter is needed.
     */
    record Full() implements AdapterSpec {
        public DType dtype() {
            return DType.BF16;
        }

        public long paramsFor(WeightGroup g) {
            return g.buffer() ? 0 : g.numel();
        }

        @Override
        public String toString() {
            return "full";
        }
    }

    /** True for the full-parameter comparison mode. */
    default boolean isFull() {
        return this instanceof Full;
    }

    /**
     * Parses {@code none}, {@code full}, {@code lora:RANK}, {@code oft:BLOCK}, optionally followed by
     * {@code :family+family} targets ({@code lora:32:attention+experts}) and {@code :f32} for f32
     * adapter tensors (default bf16).
     */
    static AdapterSpec parse(String s) {
        String[] f = s.trim().toLowerCase(Locale.ROOT).split(":");
        switch (f[0]) {
            case "none":
                requireParts(s, f, 1, 1);
                return new None();
            case "full":
                requireParts(s, f, 1, 1);
                return new Full();
            case "lora":
            case "oft":
                requireParts(s, f, 2, 4);
                int n;
                try {
                    n = Integer.parseInt(f[1]);
                } catch (NumberFormatException e) {
                    throw new IllegalArgumentException("adapter '" + s + "': " + f[0] + " size '" + f[1] + "' is not a number");
                }
                Set<ParamFamily> targets = DEFAULT_TARGETS;
                DType dt = DType.BF16;
                for (int i = 2; i < f.length; i++) {
                    if (f[i].equals("f32") || f[i].equals("bf16")) {
                        dt = f[i].equals("f32") ? DType.F32 : DType.BF16;
                    } else {
                        targets = parseTargets(s, f[i]);
                    }
                }
                return f[0].equals("lora") ? new Lora(n, targets, dt) : new Oft(n, targets, dt);
            default:
                throw new IllegalArgumentException("unknown adapter '" + s
                        + "'; expected lora:RANK, oft:BLOCK (optionally :attention+experts+shared+dense and :f32), full or none");
        }
    }

    private static Set<ParamFamily> parseTargets(String s, String list) {
        EnumSet<ParamFamily> t = EnumSet.noneOf(ParamFamily.class);
        for (String name : list.split("\\+")) {
            ParamFamily p = ParamFamily.parse(name);
            if (p == null || p == ParamFamily.NORMS || p == ParamFamily.EMBEDDING || p == ParamFamily.HYPER_CONNECTIONS) {
                throw new IllegalArgumentException("adapter '" + s + "': cannot target '" + name
                        + "'; targets are attention, dense, shared, experts, router, head");
            }
            t.add(p);
        }
        return t;
    }

    private static void requireParts(String s, String[] f, int min, int max) {
        if (f.length < min || f.length > max) {
            throw new IllegalArgumentException("adapter '" + s + "' has " + f.length + " ':'-separated parts, expected "
                    + (min == max ? min : min + " to " + max));
        }
    }

    private static void checkDtype(DType dtype) {
        if (dtype != DType.BF16 && dtype != DType.F32) {
            throw new IllegalArgumentException("adapter tensors are bf16 or f32, not " + dtype);
        }
    }

    private static String targetsSuffix(Set<ParamFamily> targets) {
        if (targets.equals(DEFAULT_TARGETS)) {
            return "";
        }
        return ":" + String.join("+", targets.stream().sorted().map(p -> p.name().toLowerCase(Locale.ROOT)).toList());
    }
}
