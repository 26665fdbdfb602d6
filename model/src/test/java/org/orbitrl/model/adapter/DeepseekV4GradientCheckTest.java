package org.orbitrl.model.adapter;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.dsv4.DeepseekV4Model;
import org.orbitrl.model.spec.ConfigLoader;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek V4 adapter gradients against central finite differences, on the fixture switched to
 * {@code scoring_func: sigmoid} (a router path PEFT's reference does not cover): loss
 * {@code Σ logits·R} for seeded random R, forward in f32. For each checked LoRA entry,
 * {@code |g − fd| ≤ 2e-3 + 2e-2·|fd|}: the central difference with step 1e-2 in f32 carries an
 * error of order step² times the third derivative plus the f32 rounding of the loss (about
 * 1e-7·Σ|logits·R| / step), both well below that bound on this model.
 */
public class DeepseekV4GradientCheckTest {

    @Test
    void sigmoidRoutedAdapterGradientsMatchFiniteDifferences(@TempDir Path tmp) throws IOException {
        Path fx = TestSafetensors.fixtures().resolve("deepseek_v4");
        ObjectMapper json = new ObjectMapper();
        ObjectNode cfg = (ObjectNode) json.readTree(fx.resolve("config.json").toFile());
        cfg.put("scoring_func", "sigmoid");
        Files.writeString(tmp.resolve("config.json"), json.writeValueAsString(cfg));
        DeepseekV4Model model = DeepseekV4Model.load(ConfigLoader.load(tmp),
                new TestSafetensors(fx.resolve("model.safetensors")), Backends.cpu());
        LoraAdapter adapter = LoraAdapter.load(AdapterConfig.read(fx.resolve("adapter")),
                new TestSafetensors(fx.resolve("adapter/adapter_model.safetensors")), model, TensorAllocator.heap());
        List<int[]> seqs = List.of(new int[] {3, 17, 250, 9, 44, 44, 120, 7, 61, 2, 33});
        Random rnd = new Random(9);
        int n = seqs.get(0).length * model.vocabSize();
        float[] r = new float[n];
        for (int i = 0; i < n; i++) {
            r[i] = (float) rnd.nextGaussian();
        }
        var tape = model.forwardTrain(seqs, false);
        adapter.zeroGrad();
        model.backward(tape, Tensor.of(r, seqs.get(0).length, model.vocabSize()));
        int checked = 0;
        StringBuilder bad = new StringBuilder();
        for (LoraAdapter.Param p : adapter.params()) {
            boolean pick = p.name().contains("layers.0.self_attn.q_a_proj") || p.name().contains("layers.2.self_attn.kv_proj")
                    || p.name().contains("layers.3.mlp.experts.base_layer") || p.name().contains("layers.2.self_attn.compressor.gate_proj");
            if (!pick) {
                continue;
            }
            float[] g = p.grad().toFloatArray();
            float[] v = p.value().toFloatArray();
            for (int trial = 0; trial < 1; trial++) {
                int i = rnd.nextInt(v.length);
                float h = 1e-2f;
                double up = loss(model, seqs, r, p, v, i, v[i] + h);
                double down = loss(model, seqs, r, p, v, i, v[i] - h);
                p.value().copyFrom(Tensor.of(v, p.value().shape()));
                double fd = (up - down) / (2 * h);
                if (!(Math.abs(g[i] - fd) <= 2e-3 + 2e-2 * Math.abs(fd))) {
                    bad.append(String.format("  %s[%d]: backward %.6f, finite difference %.6f%n", p.name(), i, g[i], fd));
                }
                checked++;
            }
        }
        assertTrue(checked >= 8, "checked " + checked + " entries");
        assertTrue(bad.isEmpty(), "gradient mismatches:\n" + bad);
    }

    private static double loss(DeepseekV4Model m, List<int[]> seqs, float[] r, LoraAdapter.Param p, float[] base, int i,
                               float value) {
        float[] v = base.clone();
        v[i] = value;
        p.value().copyFrom(Tensor.of(v, p.value().shape()));
        float[] logits = m.forwardTrain(seqs, false).logits().toFloatArray();
        double s = 0;
        for (int k = 0; k < logits.length; k++) {
            s += (double) logits[k] * r[k];
        }
        return s;
    }
}
