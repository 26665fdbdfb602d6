package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.adapter.LoraFixtureTest;
import org.orbitrl.model.nn.Weight;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Qwen3-MoE with its routed experts quantized on load. Against the bf16 reference the logits
 * move by the quantization error only (bounded below); and the active-expert-chunked path gives
 * bit-identical logits and adapter gradients for every chunk size C (1, 2, all experts).
 */
class QuantizedExpertsTest {
    static final Path DIR = TestSafetensors.fixtures().resolve("qwen3_moe");

    static Qwen3Model load(QuantFormat f) {
        return Qwen3Model.load(Qwen3FixtureTest.config("qwen3_moe"), new TestSafetensors(DIR.resolve("model.safetensors")),
                Backends.cpu(), new Qwen3Model.LoadOptions(w -> Weight.of(f.quantize(w))));
    }

    /**
     * The quantized model computes exactly what a full-precision model holding the dequantized
     * expert weights computes (1e-4 absolute: only the kernels differ), for the fused decode path
     * and the chunked path; and it stays near the bf16 reference by the format's own error.
     */
    @Test
    void quantizedExpertsComputeTheDequantizedModel() {
        var ref = new TestSafetensors(DIR.resolve("reference.safetensors"));
        float[] bf16 = ref.get("logits").toFloatArray();
        var seqs = LoraFixtureTest.setup("qwen3_moe").seqs();
        for (String name : List.of("int4-g32", "int4-g32-asym", "mxfp4", "nvfp4", "fp8-block128")) {
            QuantFormat f = QuantFormats.byName(name);
            Qwen3Model dense = Qwen3Model.load(Qwen3FixtureTest.config("qwen3_moe"),
                    new TestSafetensors(DIR.resolve("model.safetensors")), Backends.cpu(),
                    new Qwen3Model.LoadOptions(w -> {
                        var q = f.quantize(w);
                        Tensor d = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), org.orbitrl.kernels.DType.F32, w.shape());
                        Backends.cpu().dequantize(q, d);
                        return Weight.of(d);
                    }));
            float[] want = dense.forwardTrain(seqs, false).logits().toFloatArray();
            for (int chunk : new int[]{0, 3}) {
                Qwen3Model m = load(f);
                m.setExpertChunk(chunk);
                float[] got = m.forwardTrain(seqs, false).logits().toFloatArray();
                Qwen3FixtureTest.assertClose(name + " experts, chunk " + chunk + ", vs the dequantized model", want, got, 1e-4f);
            }
            double mean = 0;
            for (int i = 0; i < bf16.length; i++) {
                mean += Math.abs(bf16[i] - want[i]) / bf16.length;
            }
            // weights of this model are ~U(-0.5, 0.5): a 4-bit group-32 step is ~0.07, so expert outputs
            // move by ~15% and the logits (std ~1) by ~0.1 on average; E4M3's 3 mantissa bits (~2% rms
            // relative) move them by ~0.03
            double bound = name.startsWith("fp8") ? 0.06 : 0.3;
            System.out.printf("%s experts: mean |logit - bf16 reference| %.3e%n", name, mean);
            assertTrue(mean < bound && mean > 0, name + ": mean |logit difference| " + mean + " vs bound " + bound);
        }
    }

    @Test
    void chunkedDequantizationIsIdenticalForEveryChunkSize() {
        var cfg = AdapterConfig.read(DIR.resolve("adapter"));
        float[] logits0 = null;
        Map<String, float[]> grads0 = null;
        for (int chunk : new int[]{1, 2, 8}) {
            Qwen3Model m = load(QuantFormats.byName("int4-g32"));
            m.setExpertChunk(chunk);
            var adapter = LoraAdapter.load(cfg, new TestSafetensors(DIR.resolve("adapter/adapter_model.safetensors")), m,
                    TensorAllocator.heap());
            var base = LoraFixtureTest.setup("qwen3_moe");
            var s = new LoraFixtureTest.Setup(m, adapter, base.ref(), base.seqs());
            float[] logits = m.forwardTrain(s.seqs(), false).logits().toFloatArray();
            Map<String, float[]> grads = LoraFixtureTest.gradients(s, chunk == 2);
            if (logits0 == null) {
                logits0 = logits;
                grads0 = grads;
                continue;
            }
            assertArrayEquals(logits0, logits, 0f, "logits with C=" + chunk);
            for (var e : grads0.entrySet()) {
                assertArrayEquals(e.getValue(), grads.get(e.getKey()), 0f, e.getKey() + " with C=" + chunk);
            }
        }
    }
}
