package org.orbitrl.model.adapter;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DeepseekV3FixtureTest;
import org.orbitrl.model.arch.DeepseekV3Model;
import org.orbitrl.model.arch.Qwen3FixtureTest;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * PEFT LoRA on DeepSeek-V3 (peft 0.21 over transformers 5.17): the fixture adapter on every MLA
 * projection ({@code q_a_proj}, {@code q_b_proj}, {@code kv_a_proj_with_mqa}, {@code kv_b_proj},
 * {@code o_proj}) and the fused routed-expert parameters. Logits match {@code reference_lora}
 * within 1e-4 absolute, through the training forward and through the latent cache (where the
 * adapted {@code kv_b_proj} is absorbed); gradients of the fixture's loss match every
 * {@code grad.*} tensor within 1e-3 relative (‖ours − ref‖ / ‖ref‖), bit-identical with recompute.
 */
public class DeepseekV3LoraFixtureTest {

    record Setup(DeepseekV3Model model, LoraAdapter adapter, TestSafetensors ref, List<int[]> seqs) {
    }

    static Setup setup() {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v3");
        DeepseekV3Model model = DeepseekV3FixtureTest.load();
        var cfg = AdapterConfig.read(dir.resolve("adapter"));
        var adapter = LoraAdapter.load(cfg, new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model,
                TensorAllocator.heap());
        var ref = new TestSafetensors(dir.resolve("reference_lora.safetensors"));
        return new Setup(model, adapter, ref,
                FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors"))));
    }

    @Test
    void loraLogitsMatchPeftInTrainingAndThroughTheCache() {
        Setup s = setup();
        float[] ref = s.ref().get("logits").toFloatArray();
        Qwen3FixtureTest.assertClose("deepseek_v3 lora logits", ref,
                s.model().forwardTrain(s.seqs(), false).logits().toFloatArray(), 1e-4f);
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] q : s.seqs()) {
            batch.add(new CausalLM.Segment(q, s.model().newCache(q.length)));
        }
        Qwen3FixtureTest.assertClose("deepseek_v3 lora logits through the latent cache", ref,
                s.model().forward(batch).toFloatArray(), 1e-4f);
    }

    @Test
    void loraGradientsMatchPeft() {
        Map<String, float[]> stored = gradients(setup(), false);
        Setup s = setup();
        int checked = 0;
        double worst = 0;
        for (var e : stored.entrySet()) {
            String refName = "grad." + e.getKey().replace(".weight", ".default.weight");
            float[] ref = s.ref().get(refName).toFloatArray();
            double diff = 0;
            double norm = 0;
            for (int i = 0; i < ref.length; i++) {
                diff += (e.getValue()[i] - ref[i]) * (double) (e.getValue()[i] - ref[i]);
                norm += ref[i] * (double) ref[i];
            }
            double rel = Math.sqrt(diff / norm);
            assertTrue(norm > 0, refName + " reference is zero");
            assertTrue(rel < 1e-3, refName + ": relative error " + rel + " (limit 1e-3)");
            worst = Math.max(worst, rel);
            checked++;
        }
        long expected = s.ref().names().stream().filter(n -> n.startsWith("grad.")).count();
        assertEquals(expected, checked, "every grad.* tensor of the fixture is checked");
        System.out.printf("deepseek_v3: %d LoRA gradients, worst relative error %.3g%n", checked, worst);
        Map<String, float[]> recomputed = gradients(setup(), true);
        for (var e : stored.entrySet()) {
            assertArrayEquals(e.getValue(), recomputed.get(e.getKey()), 0f, e.getKey() + " with recompute");
        }
    }

    static Map<String, float[]> gradients(Setup s, boolean recompute) {
        var tape = s.model().forwardTrain(s.seqs(), recompute);
        Tensor d = FixtureLoss.dLogits(tape.logits(), s.ref(), s.seqs());
        s.adapter().zeroGrad();
        s.model().backward(tape, d);
        Map<String, float[]> out = new LinkedHashMap<>();
        s.adapter().peftGradients().forEach((k, g) -> out.put(k, g.toFloatArray()));
        return out;
    }
}
