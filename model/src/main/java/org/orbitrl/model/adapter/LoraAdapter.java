package org.orbitrl.model.adapter;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.WeightSource;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeSet;

/**
 * A LoRA adapter attached to a frozen model, in PEFT's conventions: tensor names
 * {@code base_model.model.<module>.lora_A.weight}, linears chosen by {@code target_modules}
 * (a module matches when its name equals a target or ends with "." + target), and fused expert
 * weights by {@code target_parameters}.
 *
 * <p>Fused experts follow PEFT's layout: for {@code gate_up_proj} [E, 2I, H] and
 * {@code down_proj} [E, H, I], lora_A is [E·r, in] with expert e's rows at [e·r, (e+1)·r), and
 * lora_B is [out, E·r] with rank j of expert e in column j·E + e; ΔW_e = scale·B_e·A_e. In memory
 * each expert's B is kept contiguous ([E, out, r]) and converted on import and export. Experts with
 * a fused gate_up linear (gpt-oss, whose {@code gate_up_proj} is stored [E, H, 2I] with gate and up
 * interleaved along 2I) take the whole ΔW_e [2I, H] on that linear, rows in PEFT's order. When two
 * parameters of one module are adapted, PEFT nests the wrappers: the parameter listed first in
 * {@code target_parameters} is innermost, its tensors named {@code <module>.base_layer.lora_*}.
 */
public final class LoraAdapter implements Adapter {
    private static final String PREFIX = "base_model.model.";

    /** One trainable tensor: its PEFT name, the value and its gradient (same in-memory layout). */
    public record Param(String name, Tensor value, Tensor grad, int experts, int rank) implements Adapter.Param {
        /** True for an expert lora_B, stored [E, out, r] in memory and [out, E·r] in PEFT files. */
        public boolean expertB() {
            return experts > 0;
        }

        public long[] peftShape() {
            if (!expertB()) {
                return value.shape();
            }
            return new long[]{value.dim(1), (long) experts * rank};
        }
    }

    private final AdapterConfig config;
    private final TensorAllocator allocator; // where the parameters and gradients live
    private final List<Param> params = new ArrayList<>();
    private volatile boolean enabled = true;

    private LoraAdapter(AdapterConfig config, TensorAllocator allocator) {
        this.config = config;
        this.allocator = allocator;
    }

    @Override
    public AdapterConfig config() {
        return config;
    }

    /** Trainable tensors in a fixed order (the optimizer's and the checkpoint's order). */
    @Override
    public List<Param> params() {
        return Collections.unmodifiableList(params);
    }

    @Override
    public boolean enabled() {
        return enabled;
    }

    /** Switches the adapter off (the reference policy: the base alone) or on. */
    @Override
    public void setEnabled(boolean on) {
        this.enabled = on;
    }

    /** Number of trainable scalars. */
    @Override
    public long parameterCount() {
        return params.stream().mapToLong(p -> p.value().numel()).sum();
    }

    @Override
    public void zeroGrad() {
        params.forEach(p -> {
            if (p.grad() != null) {
                allocator.zero(p.grad());
            }
        });
    }

    /** Whether this adapter has gradient buffers (one made without them serves forward passes only: a rollout slot). */
    @Override
    public boolean trainable() {
        return params.isEmpty() || params.getFirst().grad() != null;
    }

    /** A fresh adapter: A uniform in ±1/sqrt(in) (PEFT's Kaiming-uniform with a=√5), B zero; seeded. */
    public static LoraAdapter create(AdapterConfig config, AdapterTargets model, TensorAllocator allocator, long seed) {
        return create(config, model, allocator, seed, true);
    }

    /**
     * As {@link #create(AdapterConfig, AdapterTargets, TensorAllocator, long)}; with {@code gradients} false no gradient
     * buffers are allocated (an adapter that only runs forward, such as a rollout engine's slot) and a backward through
     * it is refused.
     */
    public static LoraAdapter create(AdapterConfig config, AdapterTargets model, TensorAllocator allocator, long seed,
                                     boolean gradients) {
        SplittableRandom rng = new SplittableRandom(seed);
        return build(config, model, allocator, gradients, (name, shape) -> {
            Tensor t = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, shape);
            if (name.endsWith("lora_A.weight")) {
                double bound = 1.0 / Math.sqrt(shape[1]);
                float[] v = new float[Math.toIntExact(t.numel())];
                for (int i = 0; i < v.length; i++) {
                    v[i] = (float) ((rng.nextDouble() * 2 - 1) * bound);
                }
                t.copyFrom(Tensor.of(v, shape));
            }
            return t;
        });
    }

    /** An adapter with the tensors of a PEFT adapter file (checked: every tensor present, shapes exact, none extra). */
    public static LoraAdapter load(AdapterConfig config, WeightSource source, AdapterTargets model,
                                   TensorAllocator allocator) {
        LoraAdapter adapter = build(config, model, allocator, true, source::tensor);
        TreeSet<String> extra = new TreeSet<>(source.names());
        adapter.params.forEach(p -> extra.remove(p.name()));
        if (!extra.isEmpty()) {
            throw new IllegalArgumentException("adapter file has tensors that match no target of this model: " + extra);
        }
        return adapter;
    }

    private interface Init {
        /** The initial value (any memory, any float dtype) for PEFT name {@code name} in PEFT shape {@code shape}. */
        Tensor make(String name, long[] shape);
    }

    private static Tensor param(TensorAllocator allocator, Tensor init) {
        Tensor t = allocator.allocate(MemoryCategory.ADAPTER_PARAMS, DType.F32, init.shape());
        allocator.copy(init, t);
        return t;
    }

    private static LoraAdapter build(AdapterConfig config, AdapterTargets model, TensorAllocator allocator, boolean gradients,
                                     Init init) {
        if (!config.type().equals("LORA")) {
            throw new IllegalArgumentException("not a LoRA config: " + config.type());
        }
        LoraAdapter ad = new LoraAdapter(config, allocator);
        int r = config.rank();
        float scale = config.scale();
        Map<String, Linear> linears = model.linearModules();
        TreeSet<String> unmatched = new TreeSet<>(config.targetModules());
        for (Map.Entry<String, Linear> e : linears.entrySet()) {
            String target = matchModule(e.getKey(), config.targetModules());
            if (target == null) {
                continue;
            }
            unmatched.remove(target);
            Linear lin = e.getValue();
            String base = PREFIX + e.getKey() + ".";
            Tensor a = param(allocator, init.make(base + "lora_A.weight", new long[]{r, lin.in()}));
            Tensor b = param(allocator, init.make(base + "lora_B.weight", new long[]{lin.out(), r}));
            Tensor ga = gradients ? allocator.allocate(MemoryCategory.ADAPTER_GRADS, DType.F32, r, lin.in()) : null;
            Tensor gb = gradients ? allocator.allocate(MemoryCategory.ADAPTER_GRADS, DType.F32, lin.out(), r) : null;
            ad.params.add(new Param(base + "lora_A.weight", a, ga, 0, r));
            ad.params.add(new Param(base + "lora_B.weight", b, gb, 0, r));
            lin.setAdapter(new LoraLinear(a, b, ga, gb, scale, ad::enabled));
        }
        TreeSet<String> unmatchedParams = new TreeSet<>(config.targetParameters());
        for (AdapterTargets.ExpertSet set : model.expertSets()) {
            List<String> adapted = new ArrayList<>();
            for (String p : config.targetParameters()) {
                for (String param : List.of("gate_up_proj", "down_proj")) {
                    String full = set.module() + "." + param;
                    if ((full.equals(p) || full.endsWith("." + p)) && !adapted.contains(param)) {
                        adapted.add(param);
                        unmatchedParams.remove(p);
                    }
                }
            }
            for (int i = 0; i < adapted.size(); i++) {
                String wrapper = set.module() + ".base_layer".repeat(adapted.size() - 1 - i);
                ad.attachExperts(set, adapted.get(i), PREFIX + wrapper + ".", r, scale, allocator, gradients, init);
            }
        }
        if (!unmatched.isEmpty() || !unmatchedParams.isEmpty()) {
            throw new IllegalArgumentException("adapter targets match no module of this model: target_modules "
                    + unmatched + ", target_parameters " + unmatchedParams);
        }
        return ad;
    }

    /** Fused-expert LoRA for {@code gate_up_proj} (A shared by gate and up halves) or {@code down_proj}. */
    private void attachExperts(AdapterTargets.ExpertSet set, String param, String base, int r, float scale,
                               TensorAllocator allocator, boolean gradients, Init init) {
        int e = set.experts();
        boolean gateUp = param.equals("gate_up_proj");
        int any = set.firstHeld();
        int in = gateUp ? set.gate().get(any).in() : set.down().get(any).in();
        boolean fused = set.fusedGateUp();
        int inter = fused ? set.gate().get(any).out() / 2 : set.gate().get(any).out();
        int out = gateUp ? 2 * inter : set.down().get(any).out();
        Tensor a = param(allocator, init.make(base + "lora_A.weight", new long[]{(long) e * r, in})); // [E*r, in]
        Tensor bPeft = init.make(base + "lora_B.weight", new long[]{out, (long) e * r});  // [out, E*r]
        Tensor b = allocator.allocate(MemoryCategory.ADAPTER_PARAMS, DType.F32, e, out, r); // [E, out, r]
        fromPeftB(bPeft, b, e, r, allocator);
        Tensor ga = gradients ? allocator.allocate(MemoryCategory.ADAPTER_GRADS, DType.F32, (long) e * r, in) : null;
        Tensor gb = gradients ? allocator.allocate(MemoryCategory.ADAPTER_GRADS, DType.F32, e, out, r) : null;
        params.add(new Param(base + "lora_A.weight", a, ga, 0, r));
        params.add(new Param(base + "lora_B.weight", b, gb, e, r));
        for (int x = 0; x < e; x++) {
            if (set.gate().get(x) == null) {
                continue;   // held by another expert-parallel rank: its gradient rows stay zero here
            }
            Tensor ax = a.slice(0, (long) x * r, (long) (x + 1) * r);
            Tensor gax = ga == null ? null : ga.slice(0, (long) x * r, (long) (x + 1) * r);
            Tensor bx = b.select(0, x);
            Tensor gbx = gb == null ? null : gb.select(0, x);
            if (gateUp && fused) {
                set.gate().get(x).setAdapter(new LoraLinear(ax, bx, gax, gbx, scale, this::enabled));
            } else if (gateUp) {
                set.gate().get(x).setAdapter(new LoraLinear(ax, bx.slice(0, 0, inter), gax,
                        gbx == null ? null : gbx.slice(0, 0, inter), scale, this::enabled));
                set.up().get(x).setAdapter(new LoraLinear(ax, bx.slice(0, inter, 2L * inter), gax,
                        gbx == null ? null : gbx.slice(0, inter, 2L * inter), scale, this::enabled));
            } else {
                set.down().get(x).setAdapter(new LoraLinear(ax, bx, gax, gbx, scale, this::enabled));
            }
        }
    }

    private static String matchModule(String module, List<String> targets) {
        for (String t : targets) {
            if (module.equals(t) || module.endsWith("." + t)) {
                return t;
            }
        }
        return null;
    }

    private static void fromPeftB(Tensor peft, Tensor mine, int e, int r, TensorAllocator allocator) {
        float[] src = peft.toFloatArray();  // [out, E*r]
        int out = peft.size(0);
        float[] dst = new float[src.length]; // [E, out, r]
        for (int o = 0; o < out; o++) {
            for (int j = 0; j < r; j++) {
                for (int x = 0; x < e; x++) {
                    dst[(x * out + o) * r + j] = src[o * e * r + j * e + x];
                }
            }
        }
        allocator.copy(Tensor.of(dst, e, out, r), mine);
    }

    private static Tensor toPeftB(Tensor mine, int e, int r) {
        float[] src = mine.toFloatArray();  // [E, out, r], host memory
        int out = mine.size(1);
        float[] dst = new float[src.length]; // [out, E*r]
        for (int o = 0; o < out; o++) {
            for (int j = 0; j < r; j++) {
                for (int x = 0; x < e; x++) {
                    dst[o * e * r + j * e + x] = src[(x * out + o) * r + j];
                }
            }
        }
        return Tensor.of(dst, out, (long) e * r);
    }

    /** The adapter's tensors in PEFT's names and layouts, as {@code adapter_model.safetensors} holds them. */
    @Override
    public Map<String, Tensor> peftTensors() {
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Param p : params) {
            Tensor v = allocator.toHost(p.value());
            out.put(p.name(), p.expertB() ? toPeftB(v, p.experts(), p.rank()) : v);
        }
        return out;
    }

    /** The gradients in PEFT's layouts, keyed by the parameter's PEFT name. */
    @Override
    public Map<String, Tensor> peftGradients() {
        Adapter.requireTrainable(this);
        Map<String, Tensor> out = new LinkedHashMap<>();
        for (Param p : params) {
            Tensor g = allocator.toHost(p.grad());
            out.put(p.name(), p.expertB() ? toPeftB(g, p.experts(), p.rank()) : g);
        }
        return out;
    }

    /** Writes the adapter as PEFT does: {@code adapter_config.json} and {@code adapter_model.safetensors}. */
    @Override
    public void save(java.nio.file.Path dir) throws java.io.IOException {
        config.write(dir);
        new org.orbitrl.model.checkpoint.SafetensorsWriter().metadata("format", "pt").addAll(peftTensors())
                .write(dir.resolve("adapter_model.safetensors"));
    }

    /** Copies another adapter's values (same config and targets) into this one: a slot update. */
    public void copyValuesFrom(LoraAdapter other) {
        if (other.params.size() != params.size()) {
            throw new IllegalArgumentException("adapters differ: " + other.params.size() + " vs " + params.size() + " tensors");
        }
        for (int i = 0; i < params.size(); i++) {
            allocator.copy(other.params.get(i).value(), params.get(i).value());
        }
    }
}
