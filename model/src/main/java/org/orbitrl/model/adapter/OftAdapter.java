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
import java.util.TreeSet;

/**
 * An OFT adapter (orthogonal fine-tuning) attached to a frozen model, exactly as PEFT 0.21
 * implements it for {@code nn.Linear}: every targeted linear computes {@code base_layer(x·R)}, R a
 * block-diagonal rotation of its input built per block by the Cayley map (or the Cayley-Neumann
 * series, PEFT's default) of a skew-symmetric matrix. Written from PEFT's source, not copied:
 * {@code huggingface/peft}, {@code src/peft/tuners/oft/layer.py} ({@code OFTRotationModule},
 * {@code OFTLayer.update_layer}, {@code Linear.forward}), {@code config.py} and {@code model.py}, read
 * at commit 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40; the peft 0.21.0 release's OFT math is the
 * same (its layer.py differs only in merge and quantization plumbing).
 *
 * <p>PEFT's conventions, kept here:
 * <ul>
 *   <li>Tensor {@code base_model.model.<module>.oft_R.weight} [stored blocks, b(b−1)/2] f32: per
 *       stored block the strict upper triangle of the skew matrix, row-major
 *       ({@code torch.triu_indices}). No other tensor is saved.</li>
 *   <li>{@code r} × {@code oft_block_size} = in_features, one of them given and the other inferred
 *       per layer; stored blocks = r, or 1 with {@code block_share}.</li>
 *   <li>Exact map R = (I − Q)(I + Q)⁻¹; series (use_cayley_neumann, T terms)
 *       R = I + 2Q + 2Q² + … + Q^{T−1}; the input is rotated as row vectors, x_i ↦ x_i·R_i.</li>
 *   <li>{@code coft}: before each forward the parameter is projected in place onto
 *       ‖skew(v)‖_F ≤ eps/sqrt(stored blocks).</li>
 *   <li>The bias of the base layer is untouched (it is added after the rotated product);
 *       {@code bias} other than "none" is refused by {@link AdapterConfig}.</li>
 *   <li>Default initialisation: zero parameters, so every rotation is the identity and the adapted
 *       model equals the base.</li>
 * </ul>
 * Disabled ({@link #setEnabled}), the model is the base alone: the reference policy. The
 * parameters may live in host or device memory (the allocator given); see {@link OftLinear} for
 * what runs where.
 */
public final class OftAdapter implements Adapter {
    private static final String PREFIX = "base_model.model.";

    /** One trainable tensor: its PEFT name, the value and its gradient. */
    public record Param(String name, Tensor value, Tensor grad) implements Adapter.Param {
    }

    private final AdapterConfig config;
    private TensorAllocator memory;
    private final List<Param> params = new ArrayList<>();
    private final Map<String, OftLinear> layers = new LinkedHashMap<>();
    private volatile boolean enabled = true;

    private OftAdapter(AdapterConfig config) {
        this.config = config;
    }

    @Override
    public AdapterConfig config() {
        return config;
    }

    @Override
    public List<Param> params() {
        return Collections.unmodifiableList(params);
    }

    /** The OFT hook of each adapted linear, by module name ({@code model.layers.0.self_attn.q_proj}). */
    public Map<String, OftLinear> layers() {
        return Collections.unmodifiableMap(layers);
    }

    @Override
    public boolean enabled() {
        return enabled;
    }

    @Override
    public void setEnabled(boolean on) {
        this.enabled = on;
    }

    /** A fresh adapter with PEFT's default initialisation: every parameter zero, every rotation the identity. */
    public static OftAdapter create(AdapterConfig config, AdapterTargets model, TensorAllocator allocator) {
        return create(config, model, allocator, true);
    }

    /**
     * As {@link #create(AdapterConfig, AdapterTargets, TensorAllocator)}; with {@code gradients} false no gradient buffers
     * are allocated (an adapter that only runs forward, such as a rollout engine's slot) and a backward through it is
     * refused.
     */
    public static OftAdapter create(AdapterConfig config, AdapterTargets model, TensorAllocator allocator, boolean gradients) {
        return build(config, model, allocator, gradients, (name, shape) -> allocator.allocate(MemoryCategory.ADAPTER_PARAMS,
                DType.F32, shape));
    }

    /** An adapter with the tensors of a PEFT adapter file (checked: every tensor present, shapes exact, none extra). */
    public static OftAdapter load(AdapterConfig config, WeightSource source, AdapterTargets model,
                                  TensorAllocator allocator) {
        OftAdapter adapter = build(config, model, allocator, true, (name, shape) -> {
            Tensor t = allocator.allocate(MemoryCategory.ADAPTER_PARAMS, DType.F32, shape);
            allocator.copy(source.tensor(name, shape), t);
            return t;
        });
        TreeSet<String> extra = new TreeSet<>(source.names());
        adapter.params.forEach(p -> extra.remove(p.name()));
        if (!extra.isEmpty()) {
            throw new IllegalArgumentException("adapter file has tensors that match no OFT target of this model: " + extra);
        }
        return adapter;
    }

    private interface Init {
        Tensor make(String name, long[] shape);
    }

    private static OftAdapter build(AdapterConfig config, AdapterTargets model, TensorAllocator allocator, boolean gradients,
                                    Init init) {
        if (!config.type().equals("OFT")) {
            throw new IllegalArgumentException("not an OFT config: " + config.type());
        }
        OftAdapter ad = new OftAdapter(config);
        ad.memory = allocator;
        OftSettings s = config.oft();
        TreeSet<String> unmatched = new TreeSet<>(config.targetModules());
        for (Map.Entry<String, Linear> e : model.linearModules().entrySet()) {
            String target = match(e.getKey(), config.targetModules());
            if (target == null) {
                continue;
            }
            unmatched.remove(target);
            Linear lin = e.getValue();
            OftSettings.Layout layout = s.layout(lin.in());
            String name = PREFIX + e.getKey() + ".oft_R.weight";
            long[] shape = {layout.storedBlocks(), layout.elements()};
            Tensor w = init.make(name, shape);                                                  // [stored, n]
            Tensor g = gradients ? allocator.allocate(MemoryCategory.ADAPTER_GRADS, DType.F32, shape) : null; // [stored, n]
            ad.params.add(new Param(name, w, g));
            OftLinear hook = new OftLinear(w, g, lin.in(), s, allocator, ad::enabled);
            ad.layers.put(e.getKey(), hook);
            lin.setAdapter(hook);
        }
        if (!unmatched.isEmpty()) {
            throw new IllegalArgumentException("OFT target_modules match no linear module of this model: " + unmatched);
        }
        return ad;
    }

    private static String match(String module, List<String> targets) {
        for (String t : targets) {
            if (module.equals(t) || module.endsWith("." + t)) {
                return t;
            }
        }
        return null;
    }

    /** Sets every gradient to zero, in whichever memory the adapter lives. */
    @Override
    public void zeroGrad() {
        params.forEach(p -> {
            if (p.grad() != null) {
                memory.zero(p.grad());
            }
        });
    }

    @Override
    public boolean trainable() {
        return params.isEmpty() || params.getFirst().grad() != null;
    }

    @Override
    public Map<String, Tensor> peftTensors() {
        Map<String, Tensor> out = new LinkedHashMap<>();
        params.forEach(p -> out.put(p.name(), p.value()));
        return out;
    }

    @Override
    public Map<String, Tensor> peftGradients() {
        Adapter.requireTrainable(this);
        Map<String, Tensor> out = new LinkedHashMap<>();
        params.forEach(p -> out.put(p.name(), p.grad()));
        return out;
    }

    /** Builds every layer's rotation blocks once, used until {@link #unprepare} or the next call. */
    @Override
    public void prepare(org.orbitrl.kernels.Backend backend) {
        layers.values().forEach(l -> l.prepare(backend));
    }

    @Override
    public void unprepare() {
        layers.values().forEach(OftLinear::unprepare);
    }

    /** Copies another adapter's values (same config and targets) into this one: a slot update. */
    public void copyValuesFrom(OftAdapter other) {
        if (other.params.size() != params.size()) {
            throw new IllegalArgumentException("adapters differ: " + other.params.size() + " vs " + params.size() + " tensors");
        }
        for (int i = 0; i < params.size(); i++) {
            if (!params.get(i).name().equals(other.params.get(i).name())) {
                throw new IllegalArgumentException("adapters differ at tensor " + i + ": " + other.params.get(i).name()
                        + " vs " + params.get(i).name());
            }
            memory.copy(other.params.get(i).value(), params.get(i).value());
        }
    }
}
