package org.orbitrl.model.adapter;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.dsv4.DeepseekV4Model;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4 with the fixture's PEFT LoRA adapter (attention projections, the compressors' and
 * the indexer's projections, the shared experts, and the fused routed experts through
 * {@code target_parameters}): logits within 1e-4 absolute of {@code reference_lora}, and the
 * gradients of the fixture's policy-gradient loss within 1e-3 relative (‖ours − ref‖ / ‖ref‖) of
 * every {@code grad.*} tensor. The indexer's adapters get no gradient (PEFT has none for them:
 * the indexer only chooses entries), so theirs must stay exactly zero.
 */
public class DeepseekV4LoraFixtureTest {

    private record Setup(DeepseekV4Model model, LoraAdapter adapter, TestSafetensors ref, List<int[]> seqs) {
    }

    private static Setup setup() {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        var model = DeepseekV4Model.load(ConfigLoader.load(dir), new TestSafetensors(dir.resolve("model.safetensors")),
                Backends.cpu());
        var adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, TensorAllocator.heap());
        return new Setup(model, adapter, new TestSafetensors(dir.resolve("reference_lora.safetensors")),
                FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors"))));
    }

    @Test
    void loraLogitsMatchPeft() {
        Setup s = setup();
        var tape = s.model().forwardTrain(s.seqs(), false);
        Qwen3FixtureTest.assertClose("deepseek_v4 lora logits", s.ref().get("logits").toFloatArray(),
                tape.logits().toFloatArray(), 1e-4f);
    }

    @Test
    void loraGradientsMatchPeft() {
        Setup s = setup();
        var tape = s.model().forwardTrain(s.seqs(), false);
        s.adapter().zeroGrad();
        s.model().backward(tape, FixtureLoss.dLogits(tape.logits(), s.ref(), s.seqs()));
        Map<String, Tensor> grads = s.adapter().peftGradients();
        int checked = 0;
        int indexer = 0;
        double worst = 0;
        for (var e : grads.entrySet()) {
            String refName = "grad." + e.getKey().replace(".weight", ".default.weight");
            float[] got = e.getValue().toFloatArray();
            if (!s.ref().has(refName)) {
                assertTrue(e.getKey().contains(".indexer."), refName + " has no reference gradient");
                for (float g : got) {
                    assertEquals(0f, g, e.getKey() + ": the indexer's adapter must get no gradient");
                }
                indexer++;
                continue;
            }
            float[] ref = s.ref().get(refName).toFloatArray();
            double diff = 0;
            double norm = 0;
            for (int i = 0; i < ref.length; i++) {
                diff += (got[i] - ref[i]) * (double) (got[i] - ref[i]);
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
        assertTrue(indexer > 0, "the fixture adapts the indexer's projections");
        System.out.printf("deepseek_v4: %d LoRA gradients, worst relative error %.3g%n", checked, worst);
    }
}
