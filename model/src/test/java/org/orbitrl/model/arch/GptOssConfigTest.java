package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.RopeScaling;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The model-side shape of the real gpt-oss configs ({@code shared/models/gpt-oss-*}): which modules
 * the shipped checkpoint stores in MXFP4 (experts only, by {@code modules_to_not_convert}), the
 * alternating sliding/full layers, the window and YaRN settings the model runs with.
 */
class GptOssConfigTest {

    static Path models() {
        return Path.of(System.getProperty("orbit.models", "../../shared/models"));
    }

    @Test
    void realConfigsStoreOnlyTheExpertsInMxfp4() {
        for (String name : List.of("gpt-oss-20b", "gpt-oss-120b")) {
            GptOssConfig c = GptOssConfig.from(ConfigLoader.load(models().resolve(name)));
            assertTrue(c.mxfp4(), name);
            for (int i : new int[]{0, c.layers() - 1}) {
                String p = "model.layers." + i + ".";
                assertTrue(c.storesMxfp4(p + "mlp.experts"), name + " layer " + i + " experts");
                assertFalse(c.storesMxfp4(p + "self_attn.q_proj"), name + " attention");
                assertFalse(c.storesMxfp4(p + "self_attn"), name + " attention module");
                assertFalse(c.storesMxfp4(p + "mlp.router"), name + " router");
            }
            assertFalse(c.storesMxfp4("model.embed_tokens"));
            assertFalse(c.storesMxfp4("lm_head"));
            assertTrue(c.isSliding(0) && !c.isSliding(1) && c.isSliding(2), name + " alternates sliding and full");
            assertEquals(128, c.slidingWindow());
            assertEquals(2880, c.intermediate());
            assertEquals(7f, c.swigluLimit());
            assertEquals(1.702f, c.swigluAlpha());
            assertEquals(RopeScaling.Type.YARN, c.rope().type());
            assertFalse(c.rope().truncate(), name + " YaRN truncate false");
            assertEquals(32.0, c.rope().factor());
            // mscale 0.1·ln(32) + 1 multiplies cos and sin
            assertEquals((float) (0.1 * Math.log(32) + 1), c.rope().attentionFactor(), 1e-6f);
        }
    }

    @Test
    void otherModelFamiliesAreRejected() {
        var e = assertThrows(IllegalArgumentException.class,
                () -> GptOssConfig.from(ConfigLoader.load(models().resolve("qwen3-4b"))));
        assertTrue(e.getMessage().contains("is not gpt_oss"), e.getMessage());
    }
}
