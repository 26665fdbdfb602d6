package org.orbitrl.memory.plan;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

/**
 * The reference plans kept in {@code docs/plans}: Kimi-K2.6 with its INT4 experts and DeepSeek V4
 * Pro with its FP4 experts fit one 8xB200 node with a LoRA adapter, gpt-oss-120b with its MXFP4 experts one H200;
 * the same models with a BF16 base, or trained in full with AdamW, are refused. The documents are rendered here and must
 * equal the committed ones (regenerate with {@code -Dorbit.plans.update=true}), so they cannot
 * drift from the planner.
 */
class ReferencePlansTest {
    private static final NodeSpec B200 = NodeSpec.parse("8xB200");
    private static final BatchShape BATCH = new BatchShape(64, 8, 1024, 4096, 1);

    /** One reference: a model, its shipped base format, the adapter and tensor parallelism that fit, on a node. */
    record Reference(String file, String title, String model, String base, String adapter, int tp, int chunk, int prompts,
                     int responseLen, NodeSpec node) {
        PlanRequest request() {
            return request(base, adapter, tp);
        }

        PlanRequest request(String b, String a, int t) {
            Path cfg = TestModels.configOf("models/" + model);
            ModelSpec spec = ConfigLoader.load(cfg);
            return PlanRequest.defaults(spec, cfg, node).withBase(BaseFormat.parse(b, spec))
                    .withAdapter(AdapterSpec.parse(a)).withBatch(new BatchShape(prompts, BATCH.samplesPerPrompt(), BATCH.promptLen(), responseLen,
                            BATCH.microBatch()))
                    .withLayout(ParallelLayout.colocated(ParallelLayout.auto(spec, node, 0, 0).expertParallel(), t))
                    .withExpertChunk(chunk);
        }

        String command(String b, String a, int t) {
            return "tools/orbit plan --model ../shared/models/" + model + " --node " + node.name() + " --base " + b + " --adapter " + a
                    + (t == 1 ? "" : " --tp " + t) + (chunk == PlanRequest.DEFAULT_EXPERT_CHUNK ? "" : " --chunk " + chunk)
                    + (prompts == BATCH.prompts() ? "" : " --prompts " + prompts)
                    + (responseLen == BATCH.responseLen() ? "" : " --response-len " + responseLen);
        }
    }

    /**
     * Kimi's 60 MoE layers share one f32 chunk buffer per model instance (336 MiB an expert slot, in the
     * trainer's model and in the rollout's view): the default chunk fits, with 48 prompts a step (x8 samples) where
     * the default 64 leave the training activations short (a 5120-token micro-batch keeps 61 layers' f32 inputs,
     * 8.4 GiB, under recompute).
     */
    static final int KIMI_CHUNK = PlanRequest.DEFAULT_EXPERT_CHUNK;
    static final int KIMI_PROMPTS = 48;

    static final Reference KIMI = new Reference("kimi-k2.6-int4-lora-8xB200.md",
            "Kimi-K2.6, INT4 experts as shipped, LoRA rank 32 on every projection, 8xB200",
            "kimi-k2.6", "int4", "lora:32", 1, KIMI_CHUNK, KIMI_PROMPTS, BATCH.responseLen(), B200);
    /**
     * V4 Pro's routed experts are dequantized 2 at a time (504 MiB an expert slot of f32 gate, up and down, in the
     * trainer's model and in the rollout's view): the default chunk of 8 leaves its activations 2.5 GiB short.
     */
    static final int DSV4_CHUNK = 2;
    /**
     * V4 Pro's responses up to 1024 tokens: under recompute a training micro-batch keeps every layer's four f32 input
     * streams (61 x 4 x 7168 values a token), which at 1024 + 4096 tokens alone take 33 GiB of a GPU.
     */
    static final int DSV4_RESPONSE = 1024;

    static final Reference DSV4 = new Reference("deepseek-v4-pro-fp4-lora-8xB200.md",
            "DeepSeek V4 Pro, FP4 experts and FP8 attention as shipped, LoRA rank 16 on every projection, 8xB200",
            "deepseek-v4-pro", "fp4", "lora:16", 2, DSV4_CHUNK, BATCH.prompts(), DSV4_RESPONSE, B200);

    /**
     * gpt-oss-120b on one H200: its MXFP4 experts as shipped (60.8 GiB of base), LoRA rank 32 on attention, 32 prompts x 8
     * samples of 1024 + 4096 tokens. Its 18 sliding-window layers keep 128 positions a sequence in the rollout's window
     * pool, so the KV cache is 47.1 GiB (45.1 the 18 full layers', 2.0 the window pool); holding every layer at full
     * length it would take 90.3 GiB, and the job would not fit.
     */
    static final Reference GPT_OSS = new Reference("gpt-oss-120b-mxfp4-lora-1xH200.md",
            "gpt-oss-120b, MXFP4 experts as shipped, LoRA rank 32 on attention, 1xH200",
            "gpt-oss-120b", "native", "lora:32:attention+shared+dense", 1, PlanRequest.DEFAULT_EXPERT_CHUNK, 32,
            BATCH.responseLen(), NodeSpec.parse("1xH200"));

    @Test
    void kimiInt4LoraFits() throws IOException {
        MemoryPlan p = MemoryPlanner.check(KIMI.request());
        assertTrue(p.fits());
        assertTrue(p.maxSafeExpertChunk() >= KIMI_CHUNK);
        check(KIMI);
    }

    /**
     * On 8xH200 (141 GB) Kimi-K2.6 fits with LoRA on every projection but the routed experts', with the default chunk
     * and 40 prompts a step; with the routed experts' LoRA too (38 GiB a GPU of adapter, gradients and AdamW state at
     * rank 32) it does not.
     */
    @Test
    void kimiInt4FitsH200WithoutRoutedExpertLora() {
        NodeSpec h200 = NodeSpec.parse("8xH200");
        Path cfg = TestModels.configOf("models/kimi-k2.6");
        ModelSpec spec = ConfigLoader.load(cfg);
        PlanRequest req = PlanRequest.defaults(spec, cfg, h200).withBase(BaseFormat.parse("int4", spec)).withBatch(BATCH.withPrompts(40))
                .withLayout(ParallelLayout.colocated(ParallelLayout.auto(spec, h200, 0, 0).expertParallel(), 1));
        MemoryPlan dense = MemoryPlanner.check(req.withAdapter(AdapterSpec.parse("lora:32:attention+shared+dense")));
        assertTrue(dense.fits());
        assertTrue(dense.maxSafeExpertChunk() >= PlanRequest.DEFAULT_EXPERT_CHUNK, "the default chunk fits");
        assertFalse(MemoryPlanner.plan(req.withAdapter(AdapterSpec.parse("lora:32"))).fits());
    }

    @Test
    void deepseekV4ProFp4LoraFits() throws IOException {
        MemoryPlan p = MemoryPlanner.check(DSV4.request());
        assertTrue(p.fits());
        check(DSV4);
    }

    @Test
    void gptOss120bMxfp4LoraFitsOneH200() throws IOException {
        MemoryPlan p = MemoryPlanner.check(GPT_OSS.request());
        assertTrue(p.fits());
        check(GPT_OSS);
    }

    @Test
    void bf16BasesAreRefusedAtTheBaseWeights() {
        for (Reference r : List.of(KIMI, DSV4, GPT_OSS)) {
            PlanRefusedException e = assertThrows(PlanRefusedException.class,
                    () -> MemoryPlanner.check(r.request("bf16", r.adapter(), r.tp())));
            assertEquals(MemoryCategory.BASE_WEIGHTS, e.plan().tightest().overflowCategory(), r.model());
            assertTrue(e.getMessage().contains("overflows at BASE_WEIGHTS"), e.getMessage());
        }
    }

    @Test
    void fullParameterAdamIsRefused() {
        for (Reference r : List.of(KIMI, DSV4, GPT_OSS)) {
            PlanRefusedException e = assertThrows(PlanRefusedException.class,
                    () -> MemoryPlanner.check(r.request("bf16", "full", r.tp())));
            assertFalse(e.plan().fits());
            // 16 bytes per parameter (bf16 weight and gradient, f32 m, v, master) do not fit the node at all
            assertTrue(16 * e.plan().counts().total() > r.node().totalBytes(), r.model());
        }
    }

    /** Renders the document of {@code r} and compares it with the committed one (or writes it when asked). */
    private static void check(Reference r) throws IOException {
        String doc = render(r);
        System.out.println(doc);
        Path dir = docsDir();
        Path file = dir.resolve(r.file());
        if (Boolean.getBoolean("orbit.plans.update")) {
            Files.createDirectories(dir);
            Files.writeString(file, doc, StandardCharsets.UTF_8);
            return;
        }
        assertTrue(Files.isRegularFile(file), file + " is missing; regenerate with -Dorbit.plans.update=true");
        String committed = Files.readString(file, StandardCharsets.UTF_8);
        assertEquals(committed, doc, file + " is out of date with the planner; regenerate with -Dorbit.plans.update=true");
    }

    private static Path docsDir() {
        Path module = Path.of("").toAbsolutePath();
        Path repo = Files.isRegularFile(module.resolve("../pom.xml")) && module.endsWith("memory") ? module.getParent() : module;
        return repo.resolve("docs").resolve("plans").normalize();
    }

    static String render(Reference r) {
        StringBuilder sb = new StringBuilder();
        sb.append("# ").append(r.title()).append("\n\n");
        sb.append("Rendered by `ReferencePlansTest` (module `memory`) from `../shared/models/").append(r.model())
                .append("/config.json`; the test fails when this file and the planner disagree. Regenerate with\n")
                .append("`tools/build -q -pl memory -am -Dtest=ReferencePlansTest -Dsurefire.failIfNoSpecifiedTests=false "
                        + "-Dorbit.plans.update=true test`. The same plan from the command line:\n\n")
                .append("    ").append(r.command(r.base(), r.adapter(), r.tp())).append("\n\n");
        sb.append("How the numbers are made, and what they assume: [README](README.md).\n\n");
        sb.append("## The plan: fits\n\n```\n").append(PlanTable.render(MemoryPlanner.plan(r.request()))).append("```\n\n");
        sb.append("## Other adapters and tensor parallelism on the same node\n\n");
        sb.append("Same model, base, batch and node; per-GPU total of the tightest GPU, re-planned for each row.\n\n");
        boolean latent = r.request().spec().mla() != null;   // tensor parallelism is refused for the latent attention
        if (latent) {
            sb.append("Tensor parallelism is not available for the latent-attention models (the planner refuses it, as the "
                    + "runtime does); the routed experts split with expert parallelism.\n\n");
        }
        sb.append("| adapter | TP | trainable params | per GPU | headroom | fits |\n|---|---:|---:|---:|---:|---|\n");
        for (String a : List.of("lora:32", "lora:16", "lora:8", "lora:32:attention+shared+dense", "oft:32")) {
            for (int tp : latent || r.node().gpus() == 1 ? new int[] {1} : new int[] {1, 2}) {
                MemoryPlan p = MemoryPlanner.plan(r.request(r.base(), a, tp));
                GpuBudget t = p.tightest();
                sb.append(String.format(Locale.ROOT, "| `%s` | %d | %s | %s | %s | %s |%n", a, tp,
                        Bytes.params(p.adapterParams()), Bytes.format(t.total()), Bytes.format(t.headroom()),
                        p.fits() ? "yes" : "**no** (" + t.overflowCategory() + ")"));
            }
        }
        sb.append("\n## The same job with a BF16 base: refused\n\n    ").append(r.command("bf16", r.adapter(), r.tp()))
                .append("\n\n```\n").append(refusal(r.request("bf16", r.adapter(), r.tp()))).append("```\n\n");
        sb.append("## Full-parameter AdamW instead of the adapter: refused\n\n    ").append(r.command("bf16", "full", r.tp()))
                .append("\n\n```\n").append(refusal(r.request("bf16", "full", r.tp()))).append("```\n");
        return sb.toString();
    }

    private static String refusal(PlanRequest req) {
        PlanRefusedException e = assertThrows(PlanRefusedException.class, () -> MemoryPlanner.check(req));
        return e.getMessage();
    }
}
