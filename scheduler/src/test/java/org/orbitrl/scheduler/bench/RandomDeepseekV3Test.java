package org.orbitrl.scheduler.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DeepseekV3Config;
import org.orbitrl.model.arch.DeepseekV3Model;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The generated DeepSeek-V3 weights: a Kimi-K2.6-shaped model (its INT4 experts as released) loads and runs from them. */
class RandomDeepseekV3Test {

    @Test
    void aKimiShapedModelLoadsFromItAndItsLogitsVary() throws Exception {
        Path models = Path.of(System.getProperty("orbit.models", "../../shared/models"));
        Path cfg = MlaTrainPeakBench.shape(models.resolve("kimi-k2.6/config.json"), 2, 8, 512);
        ObjectNode c = (ObjectNode) new ObjectMapper().readTree(cfg.toFile());
        c.put("hidden_size", 128);
        c.put("num_attention_heads", 4);
        c.put("num_key_value_heads", 4);
        c.put("q_lora_rank", 64);
        c.put("kv_lora_rank", 32);
        c.put("qk_nope_head_dim", 16);
        c.put("qk_rope_head_dim", 8);
        c.put("v_head_dim", 16);
        c.put("intermediate_size", 256);
        c.put("moe_intermediate_size", 64);
        c.put("num_experts_per_tok", 2);
        new ObjectMapper().writeValue(cfg.toFile(), c);
        ModelSpec spec = ConfigLoader.load(cfg);
        DeepseekV3Config dc = DeepseekV3Config.from(spec);
        try (CpuBackend b = new CpuBackend(1)) {
            DeepseekV3Model m = DeepseekV3Model.load(dc, spec.mla().ropeInterleave(), spec.quantization(),
                    new RandomDeepseekV3(dc, 1), b, Qwen3Model.LoadOptions.full());
            assertEquals(1, m.expertSets().size(), "one MoE layer after the dense first");
            Tensor logits = m.forward(List.of(new CausalLM.Segment(new int[]{3, 1, 4, 1, 5}, null)), null);
            float[] v = b.allocator().toHost(logits).toFloatArray();
            assertEquals(5 * 512, v.length);
            double sum = 0;
            double sq = 0;
            for (float x : v) {
                assertTrue(Float.isFinite(x));
                sum += x;
                sq += (double) x * x;
            }
            double sd = Math.sqrt(sq / v.length - (sum / v.length) * (sum / v.length));
            assertTrue(sd > 1e-3, "the random weights give logits that vary: standard deviation " + sd);
        }
    }
}
