package org.orbitrl.model.adapter;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.arch.dsv4.DeepseekV4Model;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The PEFT LoRA fixtures (peft 0.21 over transformers 5.17) on the CUDA backend in exact mode,
 * with the adapter's parameters and gradients in device memory: logits with the fixture adapter
 * within 1e-4 absolute of {@code reference_lora}, and the gradients of the fixture's
 * policy-gradient loss within 1e-3 relative (‖ours − ref‖ / ‖ref‖) of every {@code grad.*} tensor,
 * including the grouped per-expert LoRA of the MoE fixture, DeepSeek-V3's latent attention and
 * gpt-oss's fused experts, and DeepSeek V4 (its linears and their adapters on the device, the
 * attention, compressors and hyper-connections on the host; the indexer's adapters, which PEFT gives
 * no gradient, must get exactly zero). Skipped where no CUDA device is present.
 */
class CudaLoraFixtureTest {
    private static CudaBackend gpu;

    @BeforeAll
    static void open() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), true);
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
        }
    }

    private record Setup(Qwen3Model model, LoraAdapter adapter, TestSafetensors ref, List<int[]> seqs) {
    }

    private static Setup setup(String arch) {
        Path dir = TestSafetensors.fixtures().resolve(arch);
        var model = Qwen3Model.load(Qwen3FixtureTest.config(arch), new TestSafetensors(dir.resolve("model.safetensors")), gpu,
                Qwen3Model.LoadOptions.full());
        var adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, gpu.allocator());
        var base = new TestSafetensors(dir.resolve("reference.safetensors"));
        return new Setup(model, adapter, new TestSafetensors(dir.resolve("reference_lora.safetensors")),
                FixtureLoss.sequences(base));
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void loraLogitsAndGradientsMatchPeft(String arch) {
        Setup s = setup(arch);
        check(arch, s.model(), s.adapter(), s.ref(), s.seqs());
    }

    /** DeepSeek-V3 (the adapted kv_b_proj absorbed into the latent attention) and gpt-oss (sinks, biases, clamped SwiGLU). */
    @ParameterizedTest
    @ValueSource(strings = {"deepseek_v3", "gpt_oss"})
    void loraLogitsAndGradientsOfDeepseekV3AndGptOssMatchPeft(String arch) {
        switch (arch) {
            case "deepseek_v3" -> {
                var s = DeepseekV3LoraFixtureTest.setup(gpu);
                check(arch, s.model(), s.adapter(), s.ref(), s.seqs());
            }
            case "gpt_oss" -> {
                var s = GptOssLoraFixtureTest.setup(gpu);
                check(arch, s.model(), s.adapter(), s.ref(), s.seqs());
            }
            default -> throw new IllegalArgumentException(arch);
        }
    }

    @org.junit.jupiter.api.Test
    void loraLogitsAndGradientsOfDeepseekV4MatchPeft() {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        var model = DeepseekV4Model.load(ConfigLoader.load(dir), new TestSafetensors(dir.resolve("model.safetensors")), gpu);
        var adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, gpu.allocator());
        assertTrue(gpu.allocator().owns(adapter.params().get(0).value()), "adapter parameters live on the device");
        var ref = new TestSafetensors(dir.resolve("reference_lora.safetensors"));
        List<int[]> seqs = FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors")));
        var tape = model.forwardTrain(seqs, false);
        assertTrue(gpu.allocator().owns(tape.logits()), "the training forward's logits are device memory");
        Qwen3FixtureTest.assertClose("deepseek_v4 on cuda lora logits", ref.get("logits").toFloatArray(),
                gpu.allocator().toHost(tape.logits()).toFloatArray(), 1e-4f);
        Map<String, float[]> checked = new LinkedHashMap<>();
        int indexer = 0;
        for (var e : FixtureLoss.gradients(model, adapter, ref, seqs, false).entrySet()) {
            if (!ref.has("grad." + e.getKey().replace(".weight", ".default.weight"))) {
                assertTrue(e.getKey().contains(".indexer."), e.getKey() + " has no reference gradient");
                for (float g : e.getValue()) {
                    assertEquals(0f, g, e.getKey() + ": the indexer's adapter must get no gradient");
                }
                indexer++;
            } else {
                checked.put(e.getKey(), e.getValue());
            }
        }
        assertTrue(indexer > 0, "the fixture adapts the indexer's projections");
        FixtureLoss.assertGradientsMatch("deepseek_v4 on cuda", ref, checked, 1e-3);
    }

    private static void check(String arch, Trainable model, LoraAdapter adapter, TestSafetensors ref, List<int[]> seqs) {
        assertTrue(gpu.allocator().owns(adapter.params().get(0).value()), "adapter parameters live on the device");
        FixtureLoss.assertLoraStep(arch + " on cuda", model, adapter, ref, seqs);
    }
}
