package org.orbitrl.model.arch;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The real DeepSeek-V3 and Kimi-K2.x configs as the model reads them. The softmax scale is
 * transformers' {@code qk_head_dim^-0.5 · (0.1·mscale_all_dim·ln(factor) + 1)²} for YaRN, computed
 * here from the numbers in the config files; the cache holds kv_lora_rank + qk_rope_head_dim = 576.
 */
public class DeepseekV3ConfigTest {

    @ParameterizedTest
    @CsvSource({
            // dir,            heads, factor, dense layers, moe layers, experts, groups
            "deepseek-v3,      128,   40,     3,            58,         256,     8",
            "kimi-k2.6,        64,    64,     1,            60,         384,     1",
            "kimi-k2-instruct, 64,    32,     1,            60,         384,     1"})
    void realConfigs(String dir, int heads, double factor, int dense, int moe, int experts, int groups) {
        Path models = Path.of(System.getProperty("orbit.models", "../../shared/models"));
        DeepseekV3Config c = DeepseekV3Config.from(ConfigLoader.load(models.resolve(dir)));
        assertEquals(heads, c.heads());
        assertEquals(192, c.qkHeadDim());
        assertEquals(576, c.cacheWidth());
        double m = 0.1 * 1.0 * Math.log(factor) + 1.0;
        assertEquals((float) (m * m / Math.sqrt(192)), c.softmaxScale(), 1e-7f, dir + " softmax scale");
        int moeLayers = 0;
        for (int i = 0; i < c.layers(); i++) {
            moeLayers += c.isMoe(i) ? 1 : 0;
            assertEquals(i >= dense, c.isMoe(i), dir + " layer " + i);
        }
        assertEquals(moe, moeLayers);
        assertEquals(experts, c.experts());
        assertEquals(groups, c.nGroup());
        assertEquals(1.0f, c.rope().attentionFactor(), 0f, dir + ": mscale / mscale_all_dim leaves cos and sin unscaled");
        assertEquals(new CausalLM.CacheGeometry(c.layers(), 1, 576, 0), DeepseekV3Model.cacheGeometry(c));
    }
}
