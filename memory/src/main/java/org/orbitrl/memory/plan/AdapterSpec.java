package org.orbitrl.memory.plan;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.orbitrl.kernels.DType;
import org.orbitrl.memory.plan.internal.ArchitectureWeights;
import org.orbitrl.model.adapter.OftSettings;
import org.orbitrl.model.spec.ModelSpec;

/**
 * What trains: a LoRA or OFT adapter on the projections of some families, or (for comparison
 * only) every parameter of the model.
 */
public sealed interface AdapterSpec {

    /** The families an adapter targets unless told otherwise: every projection but the router. */
    Set<ParamFamily> DEFAULT_TARGETS = Set.copyOf(EnumSet.of(ParamFamily.ATTENTION, ParamFamily.DENSE_MLP,
            ParamFamily.SHARED_EXPERTS, ParamFamily.ROUTED_EXPERTS));

    /** Every family with projections: what an adapter named by module names may reach. */
    Set<ParamFamily> PROJECTION_FAMILIES = Set.copyOf(EnumSet.of(ParamFamily.ATTENTION, ParamFamily.DENSE_MLP,
            ParamFamily.SHARED_EXPERTS, ParamFamily.ROUTED_EXPERTS, ParamFamily.ROUTER, ParamFamily.OUTPUT_HEAD));

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

    /**
     * This adapter on model {@code spec}: an adapter named by modules reaches the families of the projections they
     * name there (each name must name one, as the runtime's adapters require); any other is itself.
     */
    default AdapterSpec on(ModelSpec spec) {
        return this;
    }

    /**
     * True if {@code g} is a projection of a family in {@code targets} and, when {@code modules} names any, one of
     * them names it as PEFT matches names, the name equal to it or ending with "." + it: a name with an
     * {@code experts.} part ({@code experts.down_proj}, {@code mlp.experts.gate_up_proj}) names a fused routed-expert
     * parameter ({@code target_parameters}); any other name the linear modules outside the routed experts
     * ({@code target_modules}: {@code q_proj} names every layer's {@code self_attn.q_proj}, {@code down_proj} the dense
     * and shared MLPs' and not the routed experts').
     */
    static boolean adapts(WeightGroup g, Set<ParamFamily> targets, List<String> modules) {
        if (!g.linear() || !targets.contains(g.family())) {
            return false;
        }
        if (modules.isEmpty()) {
            return true;
        }
        boolean expert = g.family() == ParamFamily.ROUTED_EXPERTS;
        String module = expert ? g.name() : g.name().replaceFirst("\\.weight$", "");
        for (String m : modules) {
            String name = unindexed(m);
            if (expertParameter(name) == expert && (module.equals(name) || module.endsWith("." + name))) {
                return true;
            }
        }
        return false;
    }

    /** Matches a layer index in a module name ({@code layers.3.}), as the runtime's module names carry it. */
    Pattern LAYER_INDEX = Pattern.compile("(^|\\.)layers\\.(\\d+)\\.");

    /** {@code name} without its layer index ({@code model.layers.3.self_attn.q_proj} names {@code model.layers.self_attn.q_proj}). */
    static String unindexed(String name) {
        return LAYER_INDEX.matcher(name).replaceFirst("$1layers.");
    }

    /**
     * The layer index {@code module} names; -1 for a name without one; past the int range {@link Integer#MAX_VALUE} (no
     * model has that layer).
     */
    private static int layerIndex(String module) {
        Matcher x = LAYER_INDEX.matcher(module);
        if (!x.find()) {
            return -1;
        }
        String digits = x.group(2);
        return digits.length() > 9 ? Integer.MAX_VALUE : Integer.parseInt(digits);
    }

    /**
     * How many projections of group {@code g} {@code modules} reach: all of them ({@code g.count()}) when a name without a
     * layer index names the group, else the ones of the layers that indexed names name ({@code layerCounts}).
     */
    static long adapted(WeightGroup g, Set<ParamFamily> targets, List<String> modules, Map<String, Long> layerCounts) {
        if (!adapts(g, targets, modules)) {
            return 0;
        }
        List<String> everyLayer = modules.stream().filter(m -> layerIndex(m) < 0).toList();
        if (modules.isEmpty() || !everyLayer.isEmpty() && adapts(g, targets, everyLayer)) {
            return g.count();
        }
        return layerCounts.getOrDefault(g.name(), 0L);
    }

    /**
     * For every projection group, how many projections the layer-indexed names of {@code modules} reach in model
     * {@code spec}: each named layer's own projections of the group, each layer counted once.
     */
    private static Map<String, Long> layerCounts(ModelSpec spec, Set<ParamFamily> targets, List<String> modules) {
        Map<String, Long> counts = new HashMap<>();
        Set<String> seen = new HashSet<>();
        for (String m : modules) {
            int layer = layerIndex(m);
            if (layer < 0 || layer >= spec.numLayers()) {
                continue;   // every layer's (counted whole), or no layer's: reached() refuses it
            }
            for (WeightGroup g : ArchitectureWeights.layer(spec, layer)) {
                if (adapts(g, targets, List.of(m)) && seen.add(layer + " " + g.name())) {
                    counts.merge(g.name(), g.count(), Long::sum);
                }
            }
        }
        return counts;
    }

    /** True for a name of a fused routed-expert parameter ({@code experts.down_proj}, {@code mlp.experts.gate_up_proj}). */
    static boolean expertParameter(String name) {
        return name.startsWith("experts.") || name.contains(".experts.");
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
     *
     * @param targets the families it reaches
     * @param modules the projections of those families it adapts, by name ({@link #adapts}); empty: every one
     * @param layerCounts for a projection group that only names with a layer index reach ({@code layers.3.q_proj}), the
     *                    projections of it they name on the model ({@link #on}); empty before
     */
    record Lora(int rank, Set<ParamFamily> targets, List<String> modules, DType dtype, Map<String, Long> layerCounts)
            implements AdapterSpec {
        public Lora {
            targets = Set.copyOf(targets);
            modules = List.copyOf(modules);
            layerCounts = Map.copyOf(layerCounts);
            if (rank <= 0) {
                throw new IllegalArgumentException("LoRA rank must be positive, got " + rank);
            }
            checkDtype(dtype);
        }

        public Lora(int rank, Set<ParamFamily> targets, List<String> modules, DType dtype) {
            this(rank, targets, modules, dtype, Map.of());
        }

        /** LoRA on every projection of {@code targets}. */
        public Lora(int rank, Set<ParamFamily> targets, DType dtype) {
            this(rank, targets, List.of(), dtype);
        }

        public long paramsFor(WeightGroup g) {
            return Math.multiplyExact((long) rank * (g.rows() + g.cols()), adapted(g, targets, modules, layerCounts));
        }

        @Override
        public Lora on(ModelSpec spec) {
            return modules.isEmpty() ? this : new Lora(rank, reached(spec, targets, modules, this), modules, dtype,
                    AdapterSpec.layerCounts(spec, targets, modules));
        }

        @Override
        public String toString() {
            return "lora:" + rank + targetsSuffix(targets, modules) + (dtype == DType.F32 ? ":f32" : "");
        }
    }

    /**
     * OFT with block size {@code blockSize}: each targeted projection's input dimension {@code in} is
     * rotated by {@code in/b'} orthogonal {@code b' x b'} blocks, each stored as its {@code b'(b'-1)/2}
     * skew-symmetric generator (PEFT's OFT), where {@code b'} is the block size the runtime builds for
     * that width: {@code b} where it divides {@code in}, else the divisor of {@code in} nearest to it
     * ({@link OftSettings#layout}, PEFT's {@code adjust_oft_parameters}).
     *
     * @param targets the families it reaches
     * @param modules the projections of those families it adapts, by name ({@link #adapts}); empty: every one
     * @param layerCounts as {@link Lora#layerCounts}
     */
    record Oft(int blockSize, Set<ParamFamily> targets, List<String> modules, DType dtype, Map<String, Long> layerCounts)
            implements AdapterSpec {
        public Oft {
            targets = Set.copyOf(targets);
            modules = List.copyOf(modules);
            layerCounts = Map.copyOf(layerCounts);
            if (blockSize < 2) {
                throw new IllegalArgumentException("OFT block size must be at least 2, got " + blockSize);
            }
            checkDtype(dtype);
        }

        public Oft(int blockSize, Set<ParamFamily> targets, List<String> modules, DType dtype) {
            this(blockSize, targets, modules, dtype, Map.of());
        }

        /** OFT on every projection of {@code targets}. */
        public Oft(int blockSize, Set<ParamFamily> targets, DType dtype) {
            this(blockSize, targets, List.of(), dtype);
        }

        public long paramsFor(WeightGroup g) {
            long n = adapted(g, targets, modules, layerCounts);
            if (n == 0) {
                return 0;
            }
            OftSettings.Layout l = layout(g);
            return Math.multiplyExact((long) l.storedBlocks() * l.elements(), n);
        }

        /**
         * Elements of the rotation blocks an OFT layer builds from its parameter for projection group {@code g}
         * ({@code [stored blocks, b', b']} f32 each; 0 if it does not target it).
         */
        public long rotationElementsFor(WeightGroup g) {
            long n = adapted(g, targets, modules, layerCounts);
            if (n == 0) {
                return 0;
            }
            OftSettings.Layout l = layout(g);
            return Math.multiplyExact((long) l.storedBlocks() * l.blockSize() * l.blockSize(), n);
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
        public Oft on(ModelSpec spec) {
            return modules.isEmpty() ? this : new Oft(blockSize, reached(spec, targets, modules, this), modules, dtype,
                    AdapterSpec.layerCounts(spec, targets, modules));
        }

        @Override
        public String toString() {
            return "oft:" + blockSize + targetsSuffix(targets, modules) + (dtype == DType.F32 ? ":f32" : "");
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
     * {@code :family+family} targets ({@code lora:32:attention+experts}) or {@code :module+module}
     * targets named as PEFT names them ({@code lora:32:q_proj+v_proj+experts.down_proj}, see
     * {@link #adapts}), and {@code :f32} for f32 adapter tensors (default bf16).
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
                List<String> modules = List.of();
                DType dt = DType.BF16;
                for (int i = 2; i < f.length; i++) {
                    if (f[i].equals("f32") || f[i].equals("bf16")) {
                        dt = f[i].equals("f32") ? DType.F32 : DType.BF16;
                    } else if (Arrays.stream(f[i].split("\\+")).allMatch(t -> ParamFamily.parse(t) != null)) {
                        targets = parseTargets(s, f[i]);
                    } else {
                        targets = PROJECTION_FAMILIES;   // narrowed to the families they name on a model (on)
                        modules = parseModules(s, f[i]);
                    }
                }
                return f[0].equals("lora") ? new Lora(n, targets, modules, dt) : new Oft(n, targets, modules, dt);
            default:
                throw new IllegalArgumentException("unknown adapter '" + s
                        + "'; expected lora:RANK, oft:BLOCK (optionally :attention+experts+shared+dense or :q_proj+v_proj+..."
                        + " and :f32), full or none");
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

    private static List<String> parseModules(String s, String list) {
        List<String> out = new ArrayList<>();
        for (String name : list.split("\\+")) {
            if (!name.matches("[a-z_][a-z0-9_.]*") || name.endsWith(".")) {
                throw new IllegalArgumentException("adapter '" + s + "': '" + name + "' is neither a family (attention,"
                        + " dense, shared, experts, router, head) nor a module name such as q_proj or experts.down_proj");
            }
            if (!out.contains(name)) {
                out.add(name);
            }
        }
        return out;
    }

    /**
     * The families of {@code targets} whose projections in model {@code spec} one of {@code modules} names; refused
     * naming every module that names none, as the runtime refuses targets that match no module of the model.
     */
    private static Set<ParamFamily> reached(ModelSpec spec, Set<ParamFamily> targets, List<String> modules,
                                            AdapterSpec adapter) {
        WeightInventory inv = WeightInventory.of(spec);
        EnumSet<ParamFamily> reached = EnumSet.noneOf(ParamFamily.class);
        List<String> unmatched = new ArrayList<>();
        for (String m : modules) {
            boolean any = false;
            int layer = layerIndex(m);
            List<WeightGroup> groups = layer < 0 ? inv.main()
                    : layer < spec.numLayers() ? ArchitectureWeights.layer(spec, layer) : List.of();
            for (WeightGroup g : groups) {
                if (adapts(g, targets, List.of(m))) {
                    reached.add(g.family());
                    any = true;
                }
            }
            if (!any) {
                unmatched.add(m);
            }
        }
        if (!unmatched.isEmpty()) {
            TreeSet<String> names = new TreeSet<>();
            for (WeightGroup g : inv.main()) {
                if (g.linear() && targets.contains(g.family())) {
                    String n = g.family() == ParamFamily.ROUTED_EXPERTS ? g.name() : g.name().replaceFirst("\\.weight$", "");
                    names.add(n.substring(n.lastIndexOf('.', n.lastIndexOf('.') - 1) + 1));
                }
            }
            throw new UnmatchedModulesException(adapter, unmatched, spec.modelType(), List.copyOf(names));
        }
        return reached;
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

    private static String targetsSuffix(Set<ParamFamily> targets, List<String> modules) {
        if (!modules.isEmpty()) {
            return ":" + String.join("+", modules);
        }
        if (targets.equals(DEFAULT_TARGETS)) {
            return "";
        }
        return ":" + String.join("+", targets.stream().sorted().map(p -> p.name().toLowerCase(Locale.ROOT)).toList());
    }

    /** Modules of an adapter that name no projection of the model (a refusal the job's keys can be put to). */
    public static final class UnmatchedModulesException extends IllegalArgumentException {
        private final List<String> modules;
        private final String modelType;
        private final List<String> projections;

        UnmatchedModulesException(AdapterSpec adapter, List<String> modules, String modelType, List<String> projections) {
            super("adapter " + adapter + ": " + whatIsWrong(modules, modelType, projections));
            this.modules = List.copyOf(modules);
            this.modelType = modelType;
            this.projections = List.copyOf(projections);
        }

        /** The module names that match nothing, as given. */
        public List<String> modules() {
            return modules;
        }

        /** What is wrong with {@code these} of the modules: they name no projection, and the model's projections. */
        public String whatIsWrong(List<String> these) {
            return whatIsWrong(these, modelType, projections);
        }

        private static String whatIsWrong(List<String> modules, String modelType, List<String> projections) {
            return String.join(", ", modules) + (modules.size() == 1 ? " names" : " name") + " no projection of " + modelType
                    + " (its projections: " + String.join(", ", projections) + ")";
        }
    }
}
