package org.orbitrl.memory.plan;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.adapter.OftAdapter;
import org.orbitrl.model.adapter.OftSettings;
import org.orbitrl.model.spec.ModelSpec;

/**
 * The planner's adapter parameters against the adapters the runtime builds on the fixture models: OFT with block
 * sizes that divide none, some or all of the layers' input widths (16, 32, 64, 128), and LoRA on some modules and
 * some fused expert parameters, named as a job file names them.
 */
class AdapterCountsAgreementTest {
    private static final List<String> MODELS = List.of("qwen3", "qwen3_moe", "deepseek_v3", "gpt_oss", "deepseek_v4");

    /**
     * OFT on every linear module the runtime adapts: for each block size the parameters the runtime's adapter holds
     * (its block size moved to the nearest divisor of each width) equal the planner's.
     */
    @Test
    void oftParamsEqualTheRuntimeAdaptersForBlockSizesThatDoNotDivide() {
        for (String arch : MODELS) {
            Path dir = TestModels.fixtures().resolve(arch);
            ModelSpec spec = TestModels.spec("fixtures/" + arch);
            try (LoadedModel m = LoadedModel.load(dir, new ScalarBackend(), BaseFormat.BF16)) {
                List<String> modules = moduleNames(m);
                for (int block : new int[] {2, 5, 6, 12, 24, 40, 100, 1000}) {
                    Adapter a = OftAdapter.create(AdapterConfig.oft(OftSettings.ofBlockSize(block), modules), m.targets(),
                            TensorAllocator.heap());
                    AdapterSpec planned = AdapterSpec.parse("oft:" + block + ":" + String.join("+", modules) + ":f32").on(spec);
                    assertEquals(elements(a), planned.params(WeightInventory.of(spec)), arch + ": OFT block " + block + " on "
                            + modules);
                }
            }
        }
    }

    /**
     * LoRA on some projections and fused expert parameters, as a job names them ({@code targets} and the
     * {@code target_parameters} its {@code expert_targets} become): the same parameters as the runtime's adapter;
     * {@code down_proj} names the dense and shared MLPs' projections, not the routed experts'.
     */
    @Test
    void loraOnNamedModulesEqualsTheRuntimeAdapter() {
        for (Case c : List.of(
                new Case("qwen3", List.of("q_proj", "v_proj"), List.of()),
                new Case("qwen3", List.of("down_proj", "lm_head"), List.of()),
                new Case("qwen3_moe", List.of("q_proj", "o_proj"), List.of("mlp.experts.down_proj")),
                new Case("qwen3_moe", List.of("k_proj", "gate"), List.of("mlp.experts.gate_up_proj")),
                new Case("deepseek_v3", List.of("kv_b_proj", "down_proj"), List.of("mlp.experts.gate_up_proj")),
                new Case("deepseek_v3", List.of("q_a_proj", "gate_proj"), List.of()),
                new Case("gpt_oss", List.of("q_proj", "router"), List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj")))) {
            try (LoadedModel m = LoadedModel.load(TestModels.fixtures().resolve(c.arch()), new ScalarBackend(), BaseFormat.BF16)) {
                ModelSpec spec = TestModels.spec("fixtures/" + c.arch());
                AdapterSpec planned = loraAgrees(c, m, spec);
                assertEquals(planned, AdapterSpec.parse(planned.toString()).on(spec), "the plan's adapter as --adapter spells it");
            }
        }
    }

    /**
     * Names with a layer index ({@code layers.1.self_attn.q_proj}, PEFT's full module names) adapt that layer's projection
     * alone, in the planner as in the runtime, beside names without one; a layer the model does not have, or a
     * projection its layer does not have, is refused by both.
     */
    @Test
    void layerIndexedNamesAdaptTheirLayerAlone() {
        for (Case c : List.of(
                new Case("qwen3", List.of("layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "v_proj"), List.of()),
                new Case("qwen3", List.of("layers.1.self_attn.o_proj", "layers.0.self_attn.o_proj"), List.of()),
                new Case("qwen3_moe", List.of("layers.1.self_attn.o_proj"), List.of("model.layers.0.mlp.experts.down_proj")),
                new Case("deepseek_v3", List.of("layers.0.mlp.gate_proj", "layers.1.self_attn.kv_b_proj"),
                        List.of("layers.1.mlp.experts.gate_up_proj")),
                new Case("gpt_oss", List.of("layers.1.self_attn.q_proj", "o_proj"), List.of("layers.0.mlp.experts.gate_up_proj")))) {
            try (LoadedModel m = LoadedModel.load(TestModels.fixtures().resolve(c.arch()), new ScalarBackend(), BaseFormat.BF16)) {
                ModelSpec spec = TestModels.spec("fixtures/" + c.arch());
                loraAgrees(c, m, spec);
                Adapter o = OftAdapter.create(AdapterConfig.oft(OftSettings.ofBlockSize(8), c.modules()), m.targets(),
                        TensorAllocator.heap());
                AdapterSpec oft = new AdapterSpec.Oft(8, AdapterSpec.PROJECTION_FAMILIES, c.modules(), DType.F32).on(spec);
                assertEquals(elements(o), oft.params(WeightInventory.of(spec)), "OFT " + c);
            }
        }
        ModelSpec spec = TestModels.spec("fixtures/qwen3_moe");
        for (String bad : List.of("layers.7.self_attn.q_proj", "layers.0.mlp.gate_proj", "layers.99999999999.self_attn.q_proj")) {
            var e = assertThrows(IllegalArgumentException.class, () -> AdapterSpec.parse("lora:8:" + bad).on(spec));
            assertTrue(e.getMessage().contains(bad + " names no projection of qwen3_moe"), e.getMessage());
        }
    }

    /** A LoRA of rank 4 on a fixture's modules and fused expert parameters, as a job file names them. */
    private record Case(String arch, List<String> modules, List<String> parameters) {
    }

    /** The planner's parameters for case {@code c} equal the runtime adapter's on the loaded model; the planned adapter. */
    private static AdapterSpec loraAgrees(Case c, LoadedModel m, ModelSpec spec) {
        Adapter a = LoraAdapter.create(AdapterConfig.lora(4, 8, c.modules(), c.parameters()), m.targets(), TensorAllocator.heap(), 1);
        List<String> names = new ArrayList<>(c.modules());
        names.addAll(c.parameters());
        AdapterSpec planned = new AdapterSpec.Lora(4, AdapterSpec.PROJECTION_FAMILIES, names, DType.F32).on(spec);
        assertEquals(elements(a), planned.params(WeightInventory.of(spec)), c.toString());
        return planned;
    }

    /** A module name that names no projection of the model is refused, as the runtime refuses it, naming it. */
    @Test
    void aModuleThatNamesNoProjectionIsRefused() {
        ModelSpec spec = TestModels.spec("fixtures/qwen3_moe");
        var e = assertThrows(IllegalArgumentException.class,
                () -> AdapterSpec.parse("lora:8:q_proj+gate_proj+mlp.experts.up_proj").on(spec));
        assertTrue(e.getMessage().contains("gate_proj, mlp.experts.up_proj name no projection of qwen3_moe")
                && e.getMessage().contains("experts.gate_up_proj"), e.getMessage());
    }

    /** Every linear module the runtime offers an adapter, by the last part of its name ({@code q_proj}, {@code gate}). */
    private static List<String> moduleNames(LoadedModel m) {
        TreeSet<String> names = new TreeSet<>();
        for (String n : m.targets().linearModules().keySet()) {
            names.add(n.substring(n.lastIndexOf('.') + 1));
        }
        return List.copyOf(names);
    }

    private static long elements(Adapter a) {
        long n = 0;
        for (Adapter.Param p : a.params()) {
            n += p.value().numel();
        }
        return n;
    }
}
