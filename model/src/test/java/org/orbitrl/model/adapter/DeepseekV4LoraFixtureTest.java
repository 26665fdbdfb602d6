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

    /**
     * The routed experts grouped in backend memory over the host's choice (the default) against each active expert on
     * its own rows ({@code setGroupedExperts(false)}), with the fixture's adapter (LoRA on every routed expert's gate, up
     * and down): the training forward's logits within 1e-5 absolute and, after the fixture's loss, every adapter gradient
     * within 1e-4 relative (the two paths sum the same f32 products in other orders). The grouped run is counted through
     * a proxy of the backend: each layer groups the pairs in its forward and again in its backward (which runs the block's
     * forward again rather than keep its rows), multiplies the experts' rows grouped, and takes the limited SwiGLU of the
     * routed and the shared experts each time, its backward twice, all in backend memory.
     */
    @Test
    void groupedExpertsMatchEachExpertOnItsOwnRows() {
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        Map<String, Integer> calls = new java.util.concurrent.ConcurrentHashMap<>();
        try (org.orbitrl.kernels.Backend cpu = Backends.cpu()) {
            org.orbitrl.kernels.Backend counted = (org.orbitrl.kernels.Backend) java.lang.reflect.Proxy.newProxyInstance(
                    org.orbitrl.kernels.Backend.class.getClassLoader(), new Class<?>[]{org.orbitrl.kernels.Backend.class},
                    (proxy, method, args) -> {
                        calls.merge(method.getName(), 1, Integer::sum);
                        try {
                            return method.invoke(cpu, args);
                        } catch (java.lang.reflect.InvocationTargetException e) {
                            throw e.getCause();
                        }
                    });
            var ref = new TestSafetensors(dir.resolve("reference_lora.safetensors"));
            List<int[]> seqs = FixtureLoss.sequences(new TestSafetensors(dir.resolve("reference.safetensors")));
            float[][] logits = new float[2][];
            List<Map<String, float[]>> grads = new java.util.ArrayList<>();
            for (boolean grouped : new boolean[]{true, false}) {
                var model = DeepseekV4Model.load(ConfigLoader.load(dir), new TestSafetensors(dir.resolve("model.safetensors")),
                        grouped ? counted : cpu);
                model.setGroupedExperts(grouped);
                var adapter = LoraAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                        new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, TensorAllocator.heap());
                var tape = model.forwardTrain(seqs, false);
                logits[grads.size()] = tape.logits().toFloatArray();
                adapter.zeroGrad();
                model.backward(tape, FixtureLoss.dLogits(tape.logits(), ref, seqs));
                Map<String, float[]> g = new java.util.LinkedHashMap<>();
                adapter.peftGradients().forEach((k, v) -> g.put(k, v.toFloatArray()));
                grads.add(g);
            }
            int layers = ConfigLoader.load(dir).numLayers();
            assertEquals(2 * layers, calls.getOrDefault("moeGroup", 0), "the pairs grouped once a layer's forward, again in its backward");
            assertEquals(4 * layers, calls.getOrDefault("limitedSwiglu", 0),
                    "the limited SwiGLU of the routed and shared experts, in the forward and again in the backward");
            assertEquals(2 * layers, calls.getOrDefault("limitedSwigluBackward", 0), "its backward, twice a layer");
            assertTrue(calls.getOrDefault("moeExpertMatmulShared", 0) >= layers, "gate and up grouped: " + calls);
            Qwen3FixtureTest.assertClose("deepseek_v4 grouped experts vs per expert", logits[1], logits[0], 1e-5f);
            double worst = 0;
            int compared = 0;
            for (var e : grads.get(1).entrySet()) {
                float[] want = e.getValue();
                float[] got = grads.get(0).get(e.getKey());
                double diff = 0;
                double norm = 0;
                for (int i = 0; i < want.length; i++) {
                    diff += (got[i] - want[i]) * (double) (got[i] - want[i]);
                    norm += want[i] * (double) want[i];
                }
                if (norm == 0) {
                    assertEquals(0.0, diff, e.getKey() + ": zero per expert, so grouped");
                    continue;
                }
                double rel = Math.sqrt(diff / norm);
                assertTrue(rel < 1e-4, e.getKey() + ": grouped vs per expert, relative error " + rel);
                worst = Math.max(worst, rel);
                compared++;
            }
            assertTrue(compared >= 40, "gradients compared: " + compared);
            System.out.printf("deepseek_v4 grouped experts vs per expert: %d gradients, worst relative error %.3g%n",
                    compared, worst);
        }
    }
}
