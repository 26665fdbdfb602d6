package org.orbitrl.memory.plan;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.List;
import java.util.Locale;
import org.orbitrl.kernels.MemoryCategory;

/**
 * The plan as one JSON object: {@code total_params}, {@code active_params}, {@code fits},
 * {@code gpu_capacity_bytes}, {@code per_gpu_bytes} (category to bytes, of the tightest GPU), and
 * the rest of the plan ({@code roles}, {@code params_by_family}, chunk and batch limits,
 * {@code overflow}, {@code suggestions}).
 */
public final class PlanJson {
    private static final ObjectMapper MAPPER = new ObjectMapper();

    private PlanJson() {
    }

    /** The plan, with {@code suggestions} (empty when it fits). */
    public static ObjectNode of(MemoryPlan p, List<Suggestion> suggestions) {
        ObjectNode o = MAPPER.createObjectNode();
        PlanRequest r = p.request();
        o.put("model_type", r.spec().modelType());
        if (r.configPath() != null) {
            o.put("config", r.configPath().toString());
        }
        o.put("node", r.node().name());
        o.put("gpus", r.node().gpus());
        o.put("base", r.base().name());
        o.put("adapter", r.adapter().toString());
        o.put("layout", r.layout().toString());
        o.put("recompute", r.recompute());
        o.put("total_params", p.counts().total());
        o.put("active_params", p.counts().active());
        o.put("mtp_params", p.counts().mtp());
        o.put("trainable_params", p.adapterParams());
        ObjectNode fam = o.putObject("params_by_family");
        for (ParamFamily f : ParamFamily.values()) {
            fam.put(f.name().toLowerCase(Locale.ROOT), p.counts().of(f));
        }
        o.put("fits", p.fits());
        o.put("gpu_capacity_bytes", p.gpuCapacity());
        o.set("per_gpu_bytes", categories(p.tightest()));
        o.put("per_gpu_total_bytes", p.tightest().total());
        ArrayNode roles = o.putArray("roles");
        for (GpuBudget b : p.budgets()) {
            ObjectNode x = roles.addObject();
            x.put("role", b.role().name().toLowerCase(Locale.ROOT));
            x.put("gpus", b.gpus());
            x.set("bytes", categories(b));
            x.put("total_bytes", b.total());
            x.put("headroom_bytes", b.headroom());
            x.put("fits", b.fits());
        }
        MemoryCategory over = p.tightest().overflowCategory();
        o.put("overflow", over == null ? null : over.name());
        o.put("expert_chunk", p.expertChunk());
        o.put("max_safe_expert_chunk", p.maxSafeExpertChunk());
        o.put("max_prompts", p.maxPrompts());
        o.put("max_micro_batch", p.maxMicroBatch());
        ArrayNode sug = o.putArray("suggestions");
        for (Suggestion s : suggestions) {
            ObjectNode x = sug.addObject();
            x.put("change", s.change());
            x.put("fits", s.fits());
            x.put("headroom_bytes", s.headroom());
        }
        ArrayNode notes = o.putArray("notes");
        p.notes().forEach(notes::add);
        return o;
    }

    private static ObjectNode categories(GpuBudget b) {
        ObjectNode c = MAPPER.createObjectNode();
        for (var e : b.bytes().entrySet()) {
            c.put(e.getKey().name(), e.getValue());
        }
        return c;
    }

    /** Compact one-line JSON text. */
    public static String text(MemoryPlan p, List<Suggestion> suggestions) {
        return of(p, suggestions).toString();
    }
}
