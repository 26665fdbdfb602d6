package org.orbitrl.memory.plan;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.model.spec.ModelSpec;

/** Refusals name the category that overflows and computed fixes; bad input gets a clear error. */
class RefusalAndInputTest {

    private static PlanRequest kimi(String node) {
        ModelSpec s = TestModels.spec("models/kimi-k2.6");
        // chunks of 2 (Kimi's 60 MoE layers share one chunk buffer per model instance, 336 MiB an expert slot)
        return PlanRequest.defaults(s, null, NodeSpec.parse(node)).withBase(BaseFormat.parse("int4")).withExpertChunk(2);
    }

    @Test
    void baseThatDoesNotFitOverflowsAtBaseWeights() {
        // 1.03T parameters at ~0.56 B/expert parameter over 8 x 80 GB: the base alone is past the GPU.
        PlanRefusedException e = assertThrows(PlanRefusedException.class, () -> MemoryPlanner.check(kimi("8xH100")));
        assertEquals(MemoryCategory.BASE_WEIGHTS, e.plan().tightest().overflowCategory());
        assertTrue(e.getMessage().startsWith("job refused before loading"), e.getMessage());
        assertTrue(e.getMessage().contains("overflows at BASE_WEIGHTS"), e.getMessage());
        assertTrue(e.getMessage().contains("per GPU"), "the table is part of the refusal");
    }

    @Test
    void kvCacheThatDoesNotFitOverflowsAtKvCache() {
        ModelSpec s = TestModels.spec("models/qwen3-30b-a3b");
        PlanRequest r = PlanRequest.defaults(s, null, NodeSpec.parse("1xH200"))
                .withBatch(new BatchShape(256, 16, 2048, 8192, 1));
        MemoryPlan p = MemoryPlanner.plan(r);
        assertEquals(MemoryCategory.KV_CACHE, p.tightest().overflowCategory());
        List<Suggestion> sug = FitAdvisor.suggest(p);
        Suggestion fewer = sug.stream().filter(x -> x.change().contains("--prompts")).findFirst().orElseThrow();
        assertTrue(fewer.fits(), fewer.describe());
        assertTrue(MemoryPlanner.plan(r.withBatch(r.batch().withPrompts(p.maxPrompts()))).fits());
    }

    @Test
    void suggestionsAreReplannedNotCanned() {
        // Without recompute, long sequences overflow at the activations; the advisor re-plans with recompute on.
        // (GPUs of 240 GB: room enough that recompute alone makes this batch fit.)
        PlanRequest r = kimi("8x240GB").withRecompute(false).withBatch(new BatchShape(16, 8, 2048, 8192, 1));
        MemoryPlan p = MemoryPlanner.plan(r);
        assertFalse(p.fits());
        assertEquals(MemoryCategory.ACTIVATIONS, p.tightest().overflowCategory());
        Suggestion rc = FitAdvisor.suggest(p).stream().filter(x -> x.change().contains("--recompute")).findFirst()
                .orElseThrow();
        MemoryPlan replanned = MemoryPlanner.plan(r.withRecompute(true));
        assertEquals(replanned.fits(), rc.fits());
        assertEquals(replanned.tightest().headroom(), rc.headroom(), "the suggestion reports the re-planned headroom");
        assertTrue(rc.fits(), rc.describe());
        // A change that does not help says how far it still is.
        Suggestion chunk = FitAdvisor.suggest(p).stream().filter(x -> x.change().contains("--chunk 1")).findFirst()
                .orElseThrow();
        assertFalse(chunk.fits());
        assertTrue(chunk.describe().contains("still over by"), chunk.describe());
    }

    @Test
    void impossibleLayoutsAreRefusedClearly() {
        ModelSpec s = TestModels.spec("models/kimi-k2.6");
        NodeSpec node = NodeSpec.parse("8xB200");
        PlanRequest base = PlanRequest.defaults(s, null, node);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> base.withLayout(ParallelLayout.colocated(5, 1)));
        assertTrue(e.getMessage().contains("384 experts") && e.getMessage().contains("5"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> base.withLayout(ParallelLayout.colocated(16, 1)));
        assertTrue(e.getMessage().contains("does not divide"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> base.withLayout(ParallelLayout.colocated(8, 3)));
        assertTrue(e.getMessage().contains("tensor-parallel size 3"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> base.withLayout(ParallelLayout.split(4, 1, 4, 3)));
        assertTrue(e.getMessage().contains("uses 7 GPUs"), e.getMessage());
        ModelSpec dense = TestModels.spec("models/qwen3-4b");
        e = assertThrows(IllegalArgumentException.class,
                () -> PlanRequest.defaults(dense, null, node).withLayout(ParallelLayout.colocated(2, 1)));
        assertTrue(e.getMessage().contains("no experts"), e.getMessage());
    }

    @Test
    void badNamesAndNumbersAreRefusedClearly() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> NodeSpec.parse("8xA100"));
        assertTrue(e.getMessage().contains("8xA100") && e.getMessage().contains("8xB200"), e.getMessage());
        assertEquals(8L * 96_000_000_000L, NodeSpec.parse("8x96GB").totalBytes());
        assertEquals(4L * 80 * (1L << 30), NodeSpec.parse("4x80GiB").totalBytes());
        assertEquals(1, NodeSpec.parse("1xH200").gpus());
        e = assertThrows(IllegalArgumentException.class, () -> AdapterSpec.parse("lora:abc"));
        assertTrue(e.getMessage().contains("'abc' is not a number"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> AdapterSpec.parse("lora:0"));
        assertTrue(e.getMessage().contains("rank must be positive"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> AdapterSpec.parse("lora:8:norms"));
        assertTrue(e.getMessage().contains("cannot target"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> BaseFormat.parse("int5"));
        assertTrue(e.getMessage().contains("unknown base format 'int5'"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> new BatchShape(8, 0, 10, 10, 1));
        assertTrue(e.getMessage().contains("samples per prompt"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class,
                () -> PlanRequest.defaults(TestModels.spec("models/kimi-k2.6"), null, NodeSpec.parse("8xB200"))
                        .withAdapter(AdapterSpec.parse("full")));
        assertTrue(e.getMessage().contains("bf16 base"), e.getMessage());
        assertEquals("experts=int4,attention=fp8", BaseFormat.parse("experts=int4,attention=fp8").name());
        assertEquals(StorageFormat.FP8_BLOCK128, BaseFormat.parse("experts=int4,attention=fp8").of(ParamFamily.ATTENTION));
    }

    @Test
    void nativeBaseFollowsTheCheckpoint() {
        assertEquals("int4", BaseFormat.nativePreset(TestModels.spec("models/kimi-k2.6")));
        assertEquals("fp8", BaseFormat.nativePreset(TestModels.spec("models/kimi-k2-instruct")));
        assertEquals("fp4", BaseFormat.nativePreset(TestModels.spec("models/deepseek-v4-pro")));
        assertEquals("mxfp4", BaseFormat.nativePreset(TestModels.spec("models/gpt-oss-120b")));
        assertEquals("bf16", BaseFormat.nativePreset(TestModels.spec("models/qwen3-235b-a22b")));
    }
}
