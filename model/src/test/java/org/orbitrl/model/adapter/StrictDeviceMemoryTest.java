package org.orbitrl.model.adapter;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.StrictBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DeepseekV3FixtureTest;
import org.orbitrl.model.arch.FixtureRuns;
import org.orbitrl.model.arch.GptOssFixtureTest;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Trainable;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek-V3 and gpt-oss on a {@link StrictBackend}: device memory that only the backend's thread
 * may touch, and operations that refuse host tensors, so any host read of a device tensor not taken
 * through the allocator, and any host tensor handed to an operation, fails here as it would on a
 * GPU. The numbers are checked too, against the same references as the CPU fixture tests: a chunked
 * prefill and token-by-token decode through the caches within 1e-4 absolute of the transformers
 * logits, and a LoRA training step within 1e-4 of the PEFT logits and 1e-3 relative of every PEFT
 * gradient.
 */
class StrictDeviceMemoryTest {
    private StrictBackend strict;

    @BeforeEach
    void open() {
        strict = new StrictBackend();
    }

    @AfterEach
    void close() {
        strict.close();
    }

    @Test
    void theDoubleRefusesHostAccessAndHostOperands() {
        Tensor dev = strict.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, 2, 3);
        Tensor host = Tensor.of(new float[]{1, 2, 3, 4, 5, 6}, 2, 3);
        assertThrows(WrongThreadException.class, dev::toFloatArray, "a host read of device memory");
        assertThrows(WrongThreadException.class, () -> dev.copyFrom(host), "a host write into device memory");
        assertThrows(IllegalArgumentException.class, () -> strict.add(host, dev, dev), "a host operand");
        Tensor up = strict.allocator().upload(MemoryCategory.ACTIVATIONS, host);
        strict.add(up, up, dev);
        assertArrayEquals(new float[]{2, 4, 6, 8, 10, 12}, strict.allocator().toHost(dev).toFloatArray());
        assertThrows(IllegalArgumentException.class, () -> strict.allocator().toHost(dev.transpose(0, 1)),
                "a strided device view copied to the host");
        Tensor t = strict.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, 3, 2);
        assertThrows(IllegalArgumentException.class, () -> strict.scale(dev.transpose(0, 1), 2f, t),
                "a strided operand where the device kernel needs a contiguous one");
        strict.copy(dev.transpose(0, 1), t);
        assertArrayEquals(new float[]{2, 8, 4, 10, 6, 12}, strict.allocator().toHost(t).toFloatArray(), "a strided copy");
    }

    @Test
    void deepseekV3DecodesThroughTheLatentCacheOnDeviceMemory() {
        var model = DeepseekV3FixtureTest.load(strict);
        var ref = DeepseekV3FixtureTest.reference();
        decodeAndCompare("deepseek_v3", model, DeepseekV3FixtureTest.inputs(ref), ref.get("logits").toFloatArray());
    }

    @Test
    void gptOssDecodesAcrossTheSlidingWindowOnDeviceMemory() {
        var model = GptOssFixtureTest.model(strict);
        var ref = new TestSafetensors(GptOssFixtureTest.dir().resolve("reference.safetensors"));
        decodeAndCompare("gpt_oss", model, GptOssFixtureTest.inputRows(ref), ref.get("logits").toFloatArray());
    }

    @Test
    void deepseekV3LoraStepOnDeviceMemoryMatchesPeft() {
        var s = DeepseekV3LoraFixtureTest.setup(strict);
        loraStep("deepseek_v3", s.model(), s.adapter(), s.ref(), s.seqs());
    }

    @Test
    void gptOssLoraStepOnDeviceMemoryMatchesPeft() {
        var s = GptOssLoraFixtureTest.setup(strict);
        loraStep("gpt_oss", s.model(), s.adapter(), s.ref(), s.seqs());
    }

    /**
     * DeepSeek V4, whose routed experts run grouped in device memory over the host's choice: the choice and the weights
     * copied there, the products, the limited SwiGLU and the backward's gradients there, the results copied back.
     */
    @Test
    void deepseekV4LoraStepOnDeviceMemoryMatchesPeft() {
        java.nio.file.Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        var model = org.orbitrl.model.arch.dsv4.DeepseekV4Model.load(org.orbitrl.model.spec.ConfigLoader.load(dir),
                new TestSafetensors(dir.resolve("model.safetensors")), strict);
        var adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, strict.allocator());
        var ref = new TestSafetensors(dir.resolve("reference_lora.safetensors"));
        List<int[]> seqs = FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors")));
        assertTrue(strict.allocator().owns(adapter.params().get(0).value()), "adapter parameters are device memory");
        var tape = model.forwardTrain(seqs, false);
        Qwen3FixtureTest.assertClose("deepseek_v4 on strict device memory lora logits", ref.get("logits").toFloatArray(),
                strict.allocator().toHost(tape.logits()).toFloatArray(), 1e-4f);
        java.util.Map<String, float[]> checked = new java.util.LinkedHashMap<>();
        FixtureLoss.gradients(model, adapter, ref, seqs, false).forEach((k, g) -> {
            if (!k.contains(".indexer.")) {   // PEFT gives the indexer's adapters no gradient
                checked.put(k, g);
            }
        });
        FixtureLoss.assertGradientsMatch("deepseek_v4 on strict device memory", ref, checked, 1e-3);
    }

    /** Both rows batched: a 3-token prefill into fresh caches, then one token a step. */
    private void decodeAndCompare(String arch, CausalLM model, List<int[]> rows, float[] expected) {
        int t = rows.get(0).length;
        int v = model.vocabSize();
        float[][] got = FixtureRuns.decodeInSteps(model, rows, List.of(model.newCache(2), model.newCache(2)), 3);
        for (int b = 0; b < rows.size(); b++) {
            Qwen3FixtureTest.assertClose(arch + " decode logits on strict device memory, row " + b,
                    FixtureRuns.row(expected, b, t, v), got[b], 1e-4f);
        }
    }

    private void loraStep(String arch, Trainable model, LoraAdapter adapter, TestSafetensors ref, List<int[]> seqs) {
        assertTrue(strict.allocator().owns(adapter.params().get(0).value()), "adapter parameters are device memory");
        FixtureLoss.assertLoraStep(arch + " on strict device memory", model, adapter, ref, seqs);
    }
}
