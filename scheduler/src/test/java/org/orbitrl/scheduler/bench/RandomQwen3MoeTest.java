package org.orbitrl.scheduler.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.quant.Int4G32;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The generated Qwen3-MoE weights: every tensor the model reads, the statistics they are meant to have. */
class RandomQwen3MoeTest {

    private static DecoderConfig smallConfig() throws Exception {
        Path models = Path.of(System.getProperty("orbit.models", "../../shared/models"));
        ObjectNode c = (ObjectNode) new ObjectMapper().readTree(models.resolve("qwen3-30b-a3b/config.json").toFile());
        Qwen3TrainBench.shrink(c);
        c.put("num_hidden_layers", 2);
        Path dir = Files.createTempDirectory("random-qwen3-moe");
        dir.toFile().deleteOnExit();   // registered first, deleted last: after the file in it
        Path f = dir.resolve("config.json");
        new ObjectMapper().writeValue(f.toFile(), c);
        f.toFile().deleteOnExit();
        return DecoderConfig.from(ConfigLoader.load(f));
    }

    @Test
    void aQwen3MoeModelLoadsFromItWithNothingMissingOrLeftOver() throws Exception {
        DecoderConfig c = smallConfig();
        try (CpuBackend b = new CpuBackend(1)) {
            Qwen3Model m = Qwen3Model.load(c, new RandomQwen3Moe(c, 1), b, Qwen3Model.LoadOptions.full());
            assertEquals(2, m.layers());
            assertEquals(2 * c.experts(), m.expertSets().size() * c.experts());
        }
    }

    @Test
    void dequantizedExpertsAndBf16WeightsHaveStandardDeviationOfAboutTwoHundredths() throws Exception {
        DecoderConfig c = smallConfig();
        RandomQwen3Moe w = new RandomQwen3Moe(c, 3);
        String m = "model.layers.1.mlp.experts.5.down_proj";
        int out = c.hidden();
        int in = c.moeIntermediate();
        QuantizedTensor q = Int4G32.fromCheckpoint(w.tensor(m + ".weight_packed", out, in / 8),
                w.tensor(m + ".weight_scale", out, in / 32), w.tensor(m + ".weight_shape", 2));
        float[] row = new float[in];
        double sum = 0;
        double sq = 0;
        for (int r = 0; r < out; r++) {
            q.format().dequantizeRow(q, r, row);
            for (float v : row) {
                sum += v;
                sq += (double) v * v;
            }
        }
        long n = (long) out * in;
        // codes uniform in -8..7: mean -0.5·scale, std sqrt((16²−1)/12)·scale = 4.61·scale ≈ 0.02
        double scale = 0.02 / 4.61;
        double mean = sum / n;
        double std = Math.sqrt(sq / n - mean * mean);
        // four standard errors of a mean of n values of std 0.02
        assertEquals(-0.5 * scale, mean, 4 * 0.02 / Math.sqrt(n), "mean of the dequantized expert " + m + " over " + n + " values");
        assertEquals(0.02, std, 0.02 * 0.03 + 0.02 * 0.01, "std of the dequantized expert " + m);   // bf16 scale rounding ≤ 0.4%

        float[] qp = w.tensor("model.layers.0.self_attn.q_proj.weight", (long) c.heads() * c.headDim(), c.hidden())
                .to(org.orbitrl.kernels.DType.F32).toFloatArray();
        double s2 = 0;
        double s1 = 0;
        for (float v : qp) {
            s1 += v;
            s2 += (double) v * v;
        }
        double qStd = Math.sqrt(s2 / qp.length - (s1 / qp.length) * (s1 / qp.length));
        assertEquals(0.02, qStd, 0.02 * 0.03, "std of q_proj (uniform, " + qp.length + " values)");
        assertTrue(Math.abs(s1 / qp.length) < 0.02 * 0.03, "mean of q_proj " + s1 / qp.length);
    }

    @Test
    void aWrongShapeOrNameIsRefusedNamingTheTensor() throws Exception {
        DecoderConfig c = smallConfig();
        RandomQwen3Moe w = new RandomQwen3Moe(c, 1);
        var e = assertThrows(IllegalArgumentException.class, () -> w.tensor("model.norm.weight", c.hidden() + 1));
        assertTrue(e.getMessage().contains("model.norm.weight"), e.getMessage());
        var e2 = assertThrows(IllegalArgumentException.class, () -> w.tensor("model.layers.0.mlp.gate_proj.weight", 1, 1));
        assertTrue(e2.getMessage().contains("model.layers.0.mlp.gate_proj.weight"), e2.getMessage());
    }
}
