package org.orbitrl.memory.plan.internal;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.orbitrl.memory.plan.ParamFamily;
import org.orbitrl.memory.plan.WeightGroup;

/**
 * Collects weight groups layer by layer and merges tensors of the same name, shape and kind into
 * one group with a count, in first-seen order.
 */
public final class GroupList {
    private final Map<String, WeightGroup> groups = new LinkedHashMap<>();
    private final boolean f32Params;

    /** A list whose parameters are held as the checkpoint stores them, projection biases in f32. */
    public GroupList() {
        this(false);
    }

    /**
     * With {@code f32Params}, every non-projection parameter but the embedding is held in f32 (DeepSeek V4's host
     * arrays).
     */
    public GroupList(boolean f32Params) {
        this.f32Params = f32Params;
    }

    /** Adds {@code n} projection weights {@code [out, in]}. */
    public GroupList linear(String name, ParamFamily f, long out, long in, long n) {
        return add(WeightGroup.linear(name, f, out, in, n));
    }

    /**
     * Adds {@code n} projection weights {@code [out, in]}, and when {@code bias} their biases {@code [out]}, held in f32
     * (what the kernels add).
     */
    public GroupList linear(String name, ParamFamily f, long out, long in, long n, boolean bias) {
        linear(name, f, out, in, n);
        if (bias) {
            f32Param(name.replace(".weight", ".bias"), f, n, out);
        }
        return this;
    }

    /** Adds {@code n} non-projection parameters of {@code shape}. */
    public GroupList param(String name, ParamFamily f, long n, long... shape) {
        return add(f32Params ? WeightGroup.f32Param(name, f, n, shape) : WeightGroup.param(name, f, n, shape));
    }

    /** Adds {@code n} non-projection parameters of {@code shape} held in f32 whatever the checkpoint stores. */
    public GroupList f32Param(String name, ParamFamily f, long n, long... shape) {
        return add(WeightGroup.f32Param(name, f, n, shape));
    }

    /** Adds the token embedding {@code [vocab, hidden]}, held as stored. */
    public GroupList embedding(String name, ParamFamily f, long vocab, long hidden) {
        return add(WeightGroup.param(name, f, 1, vocab, hidden));
    }

    /** Adds {@code n} buffers of {@code shape}. */
    public GroupList buffer(String name, ParamFamily f, long n, long... shape) {
        return add(WeightGroup.buffer(name, f, n, shape));
    }

    /** Adds a RMSNorm weight of {@code dim}, {@code n} times. */
    public GroupList norm(String name, long dim, long n) {
        return param(name, ParamFamily.NORMS, n, dim);
    }

    /** Adds a gate/up/down SwiGLU MLP of {@code inter} in family {@code f}, {@code n} times. */
    public GroupList swiglu(String prefix, ParamFamily f, long hidden, long inter, long n, boolean bias) {
        linear(prefix + ".gate_proj.weight", f, inter, hidden, n, bias);
        linear(prefix + ".up_proj.weight", f, inter, hidden, n, bias);
        linear(prefix + ".down_proj.weight", f, hidden, inter, n, bias);
        return this;
    }

    private GroupList add(WeightGroup g) {
        if (g.count() == 0) {
            return this;
        }
        String key = g.name() + Arrays.toString(g.shape()) + g.linear() + g.buffer() + g.f32();
        WeightGroup old = groups.get(key);
        groups.put(key, old == null ? g
                : new WeightGroup(g.name(), g.family(), g.shape(), old.count() + g.count(), g.linear(), g.buffer(), g.f32()));
        return this;
    }

    /** The groups, in first-seen order. */
    public List<WeightGroup> toList() {
        return List.copyOf(new ArrayList<>(groups.values()));
    }
}
