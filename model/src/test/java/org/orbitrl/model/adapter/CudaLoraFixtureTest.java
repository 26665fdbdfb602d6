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

    /**
     * The recomputed layers' inputs offloaded to page-locked host memory (copied out and back in order with the
     * device's work, the host never waiting for either): over two steps, the second reusing the first's host buffers,
     * the adapter gradients are the same bits as with the inputs kept on the device; Qwen3-MoE, DeepSeek-V3 and
     * DeepSeek V4 (three ways of offloading).
     */
    @ParameterizedTest
    @ValueSource(strings = {"qwen3_moe", "deepseek_v3", "deepseek_v4"})
    void offloadedInputsGiveTheSameGradientsOnTheDevice(String arch) {
        Trainable model;
        LoraAdapter adapter;
        TestSafetensors ref;
        List<int[]> seqs;
        switch (arch) {
            case "qwen3_moe" -> {
                Setup s = setup(arch);
                model = s.model();
                adapter = s.adapter();
                ref = s.ref();
                seqs = s.seqs();
            }
            case "deepseek_v3" -> {
                var s = DeepseekV3LoraFixtureTest.setup(gpu);
                model = s.model();
                adapter = s.adapter();
                ref = s.ref();
                seqs = s.seqs();
            }
            default -> {
                Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
                DeepseekV4Model v4 = DeepseekV4Model.load(ConfigLoader.load(dir),
                        new TestSafetensors(dir.resolve("model.safetensors")), gpu);
                model = v4;
                adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                        new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), v4, gpu.allocator());
                ref = new TestSafetensors(dir.resolve("reference_lora.safetensors"));
                seqs = FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors")));
            }
        }
        List<Map<String, float[]>> runs = new java.util.ArrayList<>();
        for (int run = 0; run < 3; run++) {   // on the device, then offloaded twice
            model.setOffloadedInputs(run > 0);
            runs.add(releasedStep(model, adapter, ref, seqs));
        }
        model.close();   // frees the host buffers the offloaded steps kept
        assertTrue(!runs.get(0).isEmpty(), arch + ": the adapter has gradients");
        for (int run = 1; run < 3; run++) {
            for (var e : runs.get(0).entrySet()) {
                org.junit.jupiter.api.Assertions.assertArrayEquals(e.getValue(), runs.get(run).get(e.getKey()),
                        arch + ": " + e.getKey() + " with the inputs offloaded (step " + run + ") against on the device");
            }
        }
    }

    /** A recomputed step's PEFT-named adapter gradients, its tape released after the backward (as a trainer does). */
    private static Map<String, float[]> releasedStep(Trainable model, LoraAdapter adapter, TestSafetensors ref,
                                                     List<int[]> seqs) {
        var a = model.backend().allocator();
        var tape = model.forwardTrain(seqs, true);
        var d = FixtureLoss.dLogits(a.toHost(tape.logits()), ref, seqs);
        adapter.zeroGrad();
        model.backward(tape, a.upload(org.orbitrl.kernels.MemoryCategory.ACTIVATIONS, d));
        Map<String, float[]> out = new LinkedHashMap<>();
        adapter.peftGradients().forEach((k, g) -> out.put(k, g.toFloatArray()));
        tape.release(a);
        return out;
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

    /**
     * DeepSeek V4 with the default kernels: its attention on the device ({@code Backend#sinkAttention}) against the same
     * model with the attention on the host ({@code -Dorbit.cuda.mqa=off}), every other operation the same, over the
     * fixture's two sequences cut to 4 tokens each, the routed experts each on its own rows ({@code
     * setGroupedExperts(false)}: the grouped expert products round their rows to bf16 at any count): 8 rows, so the
     * default kernels' products stay f32 (above 8 rows they
     * round activations to bf16, where the attention's f32 differences of about 1e-6 flip roundings and reach 1e-2 in
     * the logits). The training forward's logits within 1e-4 absolute (not the same bits: the device's products ran);
     * after a backward from seeded random logit gradients, every adapter gradient within 1e-2 relative (‖device − host‖
     * / ‖host‖; the indexer's, which no loss reaches, exactly 0 in both): not all of the backward's default-kernel
     * products stay f32 at these rows, and where they round, the attention's differences flip bf16 roundings (2⁻⁹ of an
     * element each): measured on the H200, 76 gradients, worst 3.0e-3 (layer 0's kv LoRA A) where the logits agree to 1e-4. A wrong
     * operand, mask row or gradient would be off by order 1; the operation itself is held to 2e-5 of its scale in
     * {@code CudaSinkAttentionTest}.
     */
    @org.junit.jupiter.api.Test
    void deepseekV4AttentionOnTheDeviceMatchesTheHostsWithTheDefaultKernels() {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        try (CudaBackend fast = new CudaBackend(0, CudaBackend.defaultCacheDir(), false)) {
            var model = DeepseekV4Model.load(ConfigLoader.load(dir), new TestSafetensors(dir.resolve("model.safetensors")), fast);
            model.setGroupedExperts(false);
            var adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                    new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, fast.allocator());
            List<int[]> seqs = FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors"))).stream()
                    .map(q -> java.util.Arrays.copyOf(q, 4)).toList();
            java.util.SplittableRandom r = new java.util.SplittableRandom(4021);
            float[] dl = new float[8 * model.vocabSize()];
            for (int i = 0; i < dl.length; i++) {
                dl[i] = (float) (r.nextDouble() * 2 - 1) / 8;
            }
            float[][] logits = new float[2][];
            List<Map<String, float[]>> grads = new java.util.ArrayList<>();
            for (String mqa : new String[]{"on", "off"}) {
                String old = System.getProperty("orbit.cuda.mqa");
                System.setProperty("orbit.cuda.mqa", mqa);
                try {
                    var tape = model.forwardTrain(seqs, false);
                    logits[grads.size()] = fast.allocator().toHost(tape.logits()).toFloatArray();
                    adapter.zeroGrad();
                    model.backward(tape, fast.allocator().upload(org.orbitrl.kernels.MemoryCategory.ACTIVATIONS,
                            org.orbitrl.kernels.Tensor.of(dl, 8, model.vocabSize())));
                    Map<String, float[]> g = new LinkedHashMap<>();
                    adapter.peftGradients().forEach((k, v) -> g.put(k, v.toFloatArray()));
                    grads.add(g);
                } finally {
                    if (old == null) {
                        System.clearProperty("orbit.cuda.mqa");
                    } else {
                        System.setProperty("orbit.cuda.mqa", old);
                    }
                }
            }
            assertTrue(!java.util.Arrays.equals(logits[0], logits[1]), "the device's attention ran (other bits than the host's)");
            Qwen3FixtureTest.assertClose("deepseek_v4 default kernels, attention on the device vs the host", logits[1], logits[0],
                    1e-4f);
            double worst = 0;
            String worstName = "";
            int compared = 0;
            for (var e : grads.get(1).entrySet()) {
                float[] host = e.getValue();
                float[] dev = grads.get(0).get(e.getKey());
                double diff = 0;
                double norm = 0;
                for (int i = 0; i < host.length; i++) {
                    diff += (dev[i] - host[i]) * (double) (dev[i] - host[i]);
                    norm += host[i] * (double) host[i];
                }
                if (e.getKey().contains(".indexer.")) {
                    assertEquals(0.0, diff + norm, e.getKey() + ": the indexer's adapter gets no gradient");
                    continue;
                }
                if (norm == 0) {   // a compressor no entry of 4 tokens reaches
                    assertEquals(0.0, diff, e.getKey() + ": zero on the host, so on the device");
                    continue;
                }
                double rel = Math.sqrt(diff / norm);
                if (rel > worst) {
                    worst = rel;
                    worstName = e.getKey();
                }
                compared++;
            }
            assertTrue(compared >= 8, "gradients compared: " + compared);
            assertTrue(worst < 1e-2, worstName + ": attention on the device vs the host, relative error " + worst);
            System.out.printf("deepseek_v4 default kernels, attention on the device vs the host: %d gradients, worst relative "
                    + "error %.3g (%s)%n", compared, worst, worstName);
        }
    }

    private static void check(String arch, Trainable model, LoraAdapter adapter, TestSafetensors ref, List<int[]> seqs) {
        assertTrue(gpu.allocator().owns(adapter.params().get(0).value()), "adapter parameters live on the device");
        FixtureLoss.assertLoraStep(arch + " on cuda", model, adapter, ref, seqs);
    }
}
