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

    /** Adds {@code n} projection weights {@code [out, in]}. */
    public GroupList linear(String name, ParamFamily f, long out, long in, long n) {
        return add(WeightGroup.linear(name, f, out, in, n));
    }

    /** Adds {@code n} projection weights {@code [out, in]}, and their biases {@code [out]} when {@code bias}. */
    public GroupList linear(String name, ParamFamily f, long out, long in, long n, boolean bias) {
        linear(name, f, out, in, n);
        if (bias) {
            param(name.replace(".weight", ".bias"), f, n, out);
        }
        return this;
    }

    /** Adds {@code n} non-projection parameters of {@code shape}. */
    public GroupList param(String name, ParamFamily f, long n, long... shape) {
        return add(WeightGroup.param(name, f, n, shape));
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
        String key = g.name() + Arrays.toString(g.shape()) + g.linear() + g.buffer();
        WeightGroup old = groups.get(key);
        groups.put(key, old == null ? g
                : new WeightGroup(g.name(), g.family(), g.shape(), old.count() + g.count(), g.linear(), g.buffer()));
        return this;
    }

    /** The groups, in first-seen order. */
    public List<WeightGroup> toList() {
        return List.copyOf(new ArrayList<>(groups.values()));
    }
}
