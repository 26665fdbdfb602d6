package org.orbitrl.memory.plan;

import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import org.orbitrl.memory.plan.internal.ArchitectureWeights;
import org.orbitrl.model.spec.ModelSpec;

/**
 * Every weight tensor of a model, grouped by shape and role, derived from its spec with the
 * module structure transformers 5.17 instantiates; the multi-token-prediction layers of the
 * upstream checkpoint are kept apart ({@link #mtp}), since neither transformers nor an RL job
 * uses them. Parameter counts ({@link ParamCounts}) and base-weight bytes ({@link BaseFormat})
 * are both sums over these groups, so the two can never disagree about what the model holds.
 *
 * @param spec the model
 * @param main the decoder's tensors (parameters and saved buffers)
 * @param mtp  the multi-token-prediction layers' tensors (empty when the model has none)
 */
public record WeightInventory(ModelSpec spec, List<WeightGroup> main, List<WeightGroup> mtp) {

    public WeightInventory {
        main = List.copyOf(main);
        mtp = List.copyOf(mtp);
    }

    /** The inventory of {@code spec}. */
    public static WeightInventory of(ModelSpec spec) {
        return new WeightInventory(spec, ArchitectureWeights.main(spec), ArchitectureWeights.mtp(spec));
    }

    /** Parameters (not buffers) of the decoder, by family; tied weights counted once. */
    public Map<ParamFamily, Long> paramsByFamily() {
        return sumByFamily(main, false);
    }

    /** Saved buffers of the decoder, by family (router score-correction biases and hash tables). */
    public Map<ParamFamily, Long> buffersByFamily() {
        return sumByFamily(main, true);
    }

    /** Total parameters of the decoder: what {@code model.num_parameters()} reports in transformers. */
    public long totalParams() {
        return sum(main, false);
    }

    /** Elements of the saved buffers. */
    public long bufferElements() {
        return sum(main, true);
    }

    /** Parameters of the multi-token-prediction layers (embedding and head shared, not included). */
    public long mtpParams() {
        return sum(mtp, false);
    }

    /** Elements of the embedding/head copies the upstream checkpoint stores with its MTP layers. */
    public long mtpSharedCopies() {
        return ArchitectureWeights.mtpSharedCopies(spec);
    }

    private static Map<ParamFamily, Long> sumByFamily(List<WeightGroup> groups, boolean buffers) {
        Map<ParamFamily, Long> m = new EnumMap<>(ParamFamily.class);
        for (ParamFamily f : ParamFamily.values()) {
            m.put(f, 0L);
        }
        for (WeightGroup g : groups) {
            if (g.buffer() == buffers) {
                m.merge(g.family(), g.numel(), Math::addExact);
            }
        }
        return m;
    }

    private static long sum(List<WeightGroup> groups, boolean buffers) {
        long n = 0;
        for (WeightGroup g : groups) {
            if (g.buffer() == buffers) {
                n = Math.addExact(n, g.numel());
            }
        }
        return n;
    }
}
