package org.orbitrl.scheduler.job;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * The adapter that trains; fixed for the life of a job (its shape is what checkpoints hold).
 *
 * @param type          LoRA or OFT
 * @param rank          LoRA rank r
 * @param alpha         LoRA scale numerator α (the update is scaled by α/r)
 * @param dropout       LoRA dropout on the adapter input during training
 * @param targets       module names adapted in every layer ({@code q_proj}, {@code o_proj}, ...)
 * @param expertTargets expert projections adapted per routed expert ({@code gate_proj},
 *                      {@code up_proj}, {@code down_proj}); empty keeps experts frozen; LoRA only
 * @param oftBlockSize  OFT block size (the rotation is block-diagonal with blocks of this size)
 */
public record AdapterSpec(AdapterKind type, int rank, double alpha, double dropout, List<String> targets,
                          List<String> expertTargets, int oftBlockSize) implements Scoped {
    private static final Pattern MODULE = Pattern.compile("[A-Za-z_][A-Za-z0-9_.]*");

    public AdapterSpec {
        targets = List.copyOf(targets);
        expertTargets = List.copyOf(expertTargets);
        Checks c = new Checks()
                .range("rank", rank, 1, 4096)
                .positive("alpha", alpha)
                .range("dropout", dropout, 0.0, 0.9)
                .range("oft_block_size", oftBlockSize, 1, 65536)
                .require(!targets.isEmpty() || !expertTargets.isEmpty(), "targets",
                        "at least one of targets and expert_targets must name a module");
        for (int i = 0; i < targets.size(); i++) {
            c.require(MODULE.matcher(targets.get(i)).matches(), "targets[" + i + "]",
                    "expected a module name such as q_proj, got '" + targets.get(i) + "'");
        }
        for (int i = 0; i < expertTargets.size(); i++) {
            c.require(MODULE.matcher(expertTargets.get(i)).matches(), "expert_targets[" + i + "]",
                    "expected an expert projection such as gate_proj, got '" + expertTargets.get(i) + "'");
        }
        c.require(targets.stream().distinct().count() == targets.size(), "targets", "names a module twice");
        c.require(type != AdapterKind.OFT || expertTargets.isEmpty(), "expert_targets",
                "applies to type lora, not oft: oft rotates the linear modules of targets, the routed experts'"
                        + " fused weights take lora only; got " + expertTargets);
        c.done();
    }

    static AdapterSpec read(Section s) {
        AdapterKind kind = s.choice("type", AdapterKind.LORA);
        int rank = s.integer("rank", 16);
        double alpha = s.number("alpha", 32);
        double dropout = s.number("dropout", 0.0);
        List<String> targets = s.strings("targets", List.of("q_proj", "k_proj", "v_proj", "o_proj"));
        List<String> experts = s.strings("expert_targets", List.of());
        int block = s.integer("oft_block_size", 32);
        return Scoped.check(s, s.build(() -> new AdapterSpec(kind, rank, alpha, dropout, targets, experts, block)));
    }

    @Override
    public String choiceKey() {
        return "type";
    }

    @Override
    public Map<String, String> unusedKeys() {
        Map<String, String> out = new LinkedHashMap<>();
        if (type == AdapterKind.OFT) {
            for (String loraOnly : List.of("rank", "alpha", "dropout")) {
                out.put(loraOnly, "applies to type lora, not oft (oft is sized by oft_block_size)");
            }

        } else {
            out.put("oft_block_size", "applies to type oft, not lora (lora is sized by rank)");
        }
        return out;
    }
}
