package org.orbitrl.model.adapter;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Qwen3Model;

import java.nio.file.Path;
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
 * including the grouped per-expert LoRA of the MoE fixture. Skipped where no CUDA device is present.
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
        assertTrue(gpu.allocator().owns(adapter.params().get(0).value()), "adapter parameters live on the device");
        var base = new TestSafetensors(dir.resolve("reference.safetensors"));
        return new Setup(model, adapter, new TestSafetensors(dir.resolve("reference_lora.safetensors")),
                FixtureLoss.sequences(base));
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3", "qwen3_moe"})
    void loraLogitsAndGradientsMatchPeft(String arch) {
        Setup s = setup(arch);
        var tape = s.model().forwardTrain(s.seqs(), false);
        Tensor logits = gpu.toHost(tape.logits());
        Qwen3FixtureTest.assertClose(arch + " lora logits on cuda", s.ref().get("logits").toFloatArray(), logits.toFloatArray(), 1e-4f);

        Tensor d = FixtureLoss.dLogits(logits, s.ref(), s.seqs());
        s.adapter().zeroGrad();
        s.model().backward(tape, gpu.allocator().upload(MemoryCategory.ACTIVATIONS, d));
        Map<String, Tensor> grads = s.adapter().peftGradients();
        int checked = 0;
        double worst = 0;
        for (var e : grads.entrySet()) {
            String refName = "grad." + e.getKey().replace(".weight", ".default.weight");
            float[] ref = s.ref().get(refName).toFloatArray();
            float[] got = e.getValue().toFloatArray();
            double diff = 0;
            double norm = 0;
            for (int i = 0; i < ref.length; i++) {
                diff += (got[i] - ref[i]) * (double) (got[i] - ref[i]);
                norm += ref[i] * (double) ref[i];
            }
            double rel = Math.sqrt(diff / norm);
            assertTrue(norm > 0, refName + " reference is zero");
            assertTrue(rel < 1e-3, refName + " on cuda: relative error " + rel + " (limit 1e-3)");
            worst = Math.max(worst, rel);
            checked++;
        }
        long expected = s.ref().names().stream().filter(n -> n.startsWith("grad.")).count();
        assertEquals(expected, checked, "every grad.* tensor of the fixture is checked");
        System.out.printf("%s on cuda: %d LoRA gradients, worst relative error %.3g%n", arch, checked, worst);
    }
}
