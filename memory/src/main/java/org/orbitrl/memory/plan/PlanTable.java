package org.orbitrl.memory.plan;

import java.util.List;
import java.util.Locale;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.model.spec.ModelSpec;

/** The plan as text: what was asked, the parameter counts, and bytes per GPU by category. */
public final class PlanTable {
    private PlanTable() {
    }

    /** The full table. */
    public static String render(MemoryPlan p) {
        StringBuilder sb = new StringBuilder();
        PlanRequest r = p.request();
        ModelSpec s = r.spec();
        sb.append("Memory plan: ").append(modelName(r)).append(" on ").append(r.node()).append('\n');
        sb.append("  base ").append(r.base().name()).append(" (").append(formats(r.base())).append("); adapter ")
                .append(r.adapter()).append('\n');
        sb.append("  batch ").append(r.batch()).append('\n');
        sb.append("  layout ").append(r.layout()).append("; recompute ")
                .append(r.recompute() ? r.keptLayers() > 0 ? "on, the last " + r.keptLayers() + " layers kept" : "on" : "off")
                .append("; expert chunk ").append(p.expertChunk() > 0 ? Integer.toString(p.expertChunk()) : "none")
                .append("; KV cache ")
                .append(r.kvDtype().name().toLowerCase(Locale.ROOT)).append('\n');
        sb.append('\n').append(params(p));
        sb.append('\n').append(String.format(Locale.ROOT, "  %-20s", "per GPU"));
        for (GpuBudget b : p.budgets()) {
            sb.append(String.format(Locale.ROOT, " %20s", b.role().label() + " (x" + b.gpus() + ")"));
        }
        sb.append('\n');
        for (MemoryCategory c : GpuBudget.ALLOCATION_ORDER) {
            sb.append(String.format(Locale.ROOT, "  %-20s", label(c)));
            for (GpuBudget b : p.budgets()) {
                sb.append(String.format(Locale.ROOT, " %20s", Bytes.format(b.get(c))));
            }
            sb.append('\n');
        }
        if (p.budgets().stream().anyMatch(b -> MemoryPlanner.kernelScratchBytes(r, b.role()) > 0)) {
            sb.append(String.format(Locale.ROOT, "  %-20s", "  (kernel scratch)"));
            for (GpuBudget b : p.budgets()) {
                sb.append(String.format(Locale.ROOT, " %20s", "(" + Bytes.format(MemoryPlanner.kernelScratchBytes(r, b.role())) + ")"));
            }
            sb.append('\n');
        }
        if (!(r.adapter() instanceof AdapterSpec.None)) {
            List<GpuBudget> other = MemoryPlanner.budgets(r.withRecompute(!r.recompute()), WeightInventory.of(s));
            sb.append(String.format(Locale.ROOT, "  %-20s", r.recompute() ? "  (no recompute)" : "  (with recompute)"));
            for (GpuBudget b : other) {
                sb.append(String.format(Locale.ROOT, " %20s", "(" + Bytes.format(b.get(MemoryCategory.ACTIVATIONS)) + ")"));
            }
            sb.append('\n');
        }
        row(sb, "total", p, GpuBudget::total);
        row(sb, "capacity", p, GpuBudget::capacity);
        row(sb, "headroom", p, GpuBudget::headroom);
        sb.append('\n');
        if (p.fits()) {
            sb.append("Fits.");
        } else {
            GpuBudget t = p.tightest();
            sb.append("Does not fit: a ").append(t.role().label()).append(" GPU needs ").append(Bytes.format(t.total()))
                    .append(" of ").append(Bytes.format(t.capacity())).append(".");
        }
        if (p.expertChunk() > 0) {
            sb.append(" Largest safe expert chunk: ").append(p.maxSafeExpertChunk()).append(" of ")
                    .append(MemoryPlanner.localExperts(r)).append(" local experts");
            sb.append(p.expertChunkBytes() > 0 ? " (" + Bytes.format(p.expertChunkBytes()) + " each)." : ".");
        }
        sb.append(" Most prompts per step: ").append(p.maxPrompts()).append(" (x").append(r.batch().samplesPerPrompt())
                .append(" samples). Largest micro-batch: ").append(p.maxMicroBatch()).append(".\n");
        for (String n : p.notes()) {
            sb.append("  note: ").append(n).append('\n');
        }
        return sb.toString();
    }

    /** The refusal: why the job does not fit, the table, and the re-planned suggestions. */
    public static String refusal(MemoryPlan p, List<Suggestion> suggestions) {
        GpuBudget t = p.tightest();
        MemoryCategory over = t.overflowCategory();
        StringBuilder sb = new StringBuilder();
        sb.append("job refused before loading: ").append(modelName(p.request())).append(" does not fit on ")
                .append(p.request().node().name()).append(": a ").append(t.role().label()).append(" GPU needs ")
                .append(Bytes.format(t.total())).append(" of ").append(Bytes.format(t.capacity())).append("; it overflows at ")
                .append(over).append(" (").append(Bytes.format(t.get(over))).append(" planned, ")
                .append(Bytes.format(Math.max(0, t.leftFor(over)))).append(" left after the categories before it)\n\n");
        sb.append(render(p));
        if (!suggestions.isEmpty()) {
            sb.append("\nWhat would make it fit (each re-planned):\n");
            for (Suggestion s : suggestions) {
                sb.append("  - ").append(s.describe()).append('\n');
            }
        }
        return sb.toString();
    }

    private static String params(MemoryPlan p) {
        ParamCounts c = p.counts();
        StringBuilder sb = new StringBuilder(String.format(Locale.ROOT, "  %-20s %22s%n", "parameters", "count"));
        for (ParamFamily f : ParamFamily.values()) {
            if (c.of(f) > 0) {
                sb.append(String.format(Locale.ROOT, "  %-20s %,22d%n", f.label(), c.of(f)));
            }
        }
        var stated = StatedParams.forConfig(p.request().configPath());
        sb.append(String.format(Locale.ROOT, "  %-20s %,22d%s%n", "total", c.total(),
                stated.map(x -> "   authors: " + x.total()).orElse("")));
        sb.append(String.format(Locale.ROOT, "  %-20s %,22d%s%n", "activated", c.active(),
                stated.map(x -> "   authors: " + x.activated() + " (" + x.source() + ")").orElse("")));
        if (c.mtp() > 0) {
            sb.append(String.format(Locale.ROOT, "  %-20s %,22d%n", "MTP (not loaded)", c.mtp()));
        }
        sb.append(String.format(Locale.ROOT, "  %-20s %,22d%n", p.request().adapter().isFull() ? "trainable (all)"
                : "adapter", p.adapterParams()));
        return sb.toString();
    }

    private static void row(StringBuilder sb, String name, MemoryPlan p, java.util.function.ToLongFunction<GpuBudget> f) {
        sb.append(String.format(Locale.ROOT, "  %-20s", name));
        for (GpuBudget b : p.budgets()) {
            sb.append(String.format(Locale.ROOT, " %20s", Bytes.format(f.applyAsLong(b))));
        }
        sb.append('\n');
    }

    /** A category as the table names it. */
    public static String label(MemoryCategory c) {
        return switch (c) {
            case BASE_WEIGHTS -> "base weights";
            case DEQUANT_BUFFERS -> "dequant buffers";
            case ADAPTER_PARAMS -> "adapter params";
            case ADAPTER_GRADS -> "adapter grads";
            case OPTIMIZER_STATE -> "optimizer state";
            case ACTIVATIONS -> "activations";
            case KV_CACHE -> "KV cache";
            case LOGITS -> "logits+sampling";
            case COMM_BUFFERS -> "comm buffers";
            case RUNTIME_RESERVE -> "runtime reserve";
            case OTHER -> "other";
        };
    }

    private static String formats(BaseFormat b) {
        StringBuilder sb = new StringBuilder();
        for (ParamFamily f : ParamFamily.values()) {
            if (b.of(f) != StorageFormat.BF16) {
                sb.append(sb.isEmpty() ? "" : ", ").append(f.label()).append(' ').append(b.of(f).id());
            }
        }
        return sb.isEmpty() ? "all bf16" : sb + ", rest bf16";
    }

    static String modelName(PlanRequest r) {
        ModelSpec s = r.spec();
        String dir = r.configPath() == null ? null : dirName(r.configPath());
        return (dir == null ? "" : dir + " ") + "(" + s.modelType() + ", " + s.numLayers() + " layers"
                + (s.isMoe() ? ", " + s.moe().numExperts() + " experts top-" + s.moe().topK() : "") + ")";
    }

    private static String dirName(java.nio.file.Path p) {
        java.nio.file.Path a = p.toAbsolutePath().normalize();
        if (a.getFileName() != null && a.getFileName().toString().endsWith(".json")) {
            a = a.getParent();
        }
        return a == null || a.getFileName() == null ? null : a.getFileName().toString();
    }
}
