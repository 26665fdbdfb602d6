package org.orbitrl.model.parallel;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.nn.WeightSource;

import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One rank's view of a full checkpoint or PEFT adapter file: tensor-parallel layers come back as
 * this rank's block ({@link LayerSplit}), routed experts other ranks own are absent, the rest is
 * passed through. Row blocks are zero-copy views of the source; column blocks are copied once
 * (contiguous). Only f32/bf16 weights can be split; a quantized attention or dense MLP weight is
 * refused with its name.
 */
public final class ShardedWeights implements WeightSource {
    private static final String ADAPTER_PREFIX = "base_model.model.";
    // a routed expert's tensor, also under a prefix (Kimi's language_model., PEFT's base_model.model.)
    private static final Pattern EXPERT = Pattern.compile("(?:^|\\.)model\\.layers\\.\\d+\\.mlp\\.experts\\.(\\d+)\\.");

    private final WeightSource full;
    private final ParallelLayout layout;
    private final int tpRank;
    private final int epRank;
    private final int experts;

    /**
     * @param rank    this rank in the layout's world
     * @param experts routed experts per MoE layer (0 for a dense model)
     */
    public ShardedWeights(WeightSource full, ParallelLayout layout, int rank, int experts) {
        this.full = full;
        this.layout = layout;
        this.tpRank = layout.tpRank(rank);
        this.epRank = layout.epRank(rank);
        this.experts = experts;
    }

    /** True when this rank holds routed expert {@code e}. */
    public boolean ownsExpert(int e) {
        return layout.ep() == 1 || layout.expertOwner(e, experts) == epRank;
    }

    private boolean held(String name) {
        Matcher m = EXPERT.matcher(name);
        return !m.find() || ownsExpert(Integer.parseInt(m.group(1)));
    }

    @Override
    public boolean has(String name) {
        return held(name) && full.has(name);
    }

    @Override
    public Set<String> names() {
        Set<String> out = new TreeSet<>();
        for (String n : full.names()) {
            if (held(n)) {
                out.add(n);
            }
        }
        return out;
    }

    @Override
    public Tensor tensor(String name, long... shape) {
        if (!held(name)) {
            throw new IllegalArgumentException(name + " belongs to another expert-parallel rank than " + epRank + " of "
                    + layout);
        }
        int dim = splitDim(name);
        if (dim < 0 || layout.tp() == 1) {
            return full.tensor(name, shape);
        }
        if (dim >= shape.length) {
            throw new IllegalArgumentException(name + ": cannot split dimension " + dim + " of shape "
                    + java.util.Arrays.toString(shape));
        }
        long[] whole = shape.clone();
        whole[dim] *= layout.tp();
        Tensor t = full.tensor(name, whole);
        Tensor block = t.slice(dim, tpRank * shape[dim], (tpRank + 1) * shape[dim]);
        return block.isContiguous() ? block : block.contiguous();
    }

    /** The dimension tensor parallelism splits for {@code name}, or -1 when it is replicated. */
    static int splitDim(String name) {
        boolean adapter = name.startsWith(ADAPTER_PREFIX);
        String n = adapter ? name.substring(ADAPTER_PREFIX.length()) : name;
        int dot = n.lastIndexOf('.');
        String suffix = n.substring(dot + 1);
        String module = n.substring(0, dot);
        if (adapter) {
            boolean a = module.endsWith(".lora_A");
            boolean b = module.endsWith(".lora_B");
            if (!a && !b) {
                return -1;
            }
            LayerSplit s = LayerSplit.of(module.substring(0, module.length() - ".lora_A".length()));
            return s == LayerSplit.COLUMN && b ? 0 : s == LayerSplit.ROW && a ? 1 : -1;
        }
        LayerSplit s = LayerSplit.of(module);
        if (s == LayerSplit.NONE) {
            return -1;
        }
        if (!suffix.equals("weight") && !suffix.equals("bias")) {
            throw new IllegalArgumentException(name + ": tensor parallelism splits only f32/bf16 weights, this one is "
                    + "stored as '" + suffix + "' (quantized); use tp 1 for this model");
        }
        if (s == LayerSplit.ROW && suffix.equals("bias")) {
            throw new IllegalArgumentException(name + ": a row-parallel layer with a bias is not supported (the bias "
                    + "would be added once per tensor-parallel rank)");
        }
        return s == LayerSplit.COLUMN ? 0 : 1;
    }
}
