package org.orbitrl.model.adapter;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DeepseekV3FixtureTest;
import org.orbitrl.model.arch.DeepseekV3Model;
import org.orbitrl.model.arch.Qwen3FixtureTest;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * OFT on every MLA projection of DeepSeek-V3, with seeded random (non-identity) rotations. OFT
 * rotates a layer's input, so the latent cache's absorbed form must use the rotated kv_b_proj: its
 * logits must equal the training forward's (expanded keys and values) within 1e-4, and both must
 * differ from the adapter-free model's (the rotations take effect).
 */
class DeepseekV3OftTest {

    @Test
    void absorbedCacheFormHonoursOftOnKvB() {
        DeepseekV3Model model = DeepseekV3FixtureTest.load();
        var ref = new TestSafetensors(TestSafetensors.fixtures().resolve("deepseek_v3/reference.safetensors"));
        List<int[]> seqs = FixtureLoss.sequences(ref);
        var cfg = AdapterConfig.oft(OftSettings.ofBlockSize(4),
                List.of("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj"));
        OftAdapter oft = OftAdapter.create(cfg, model, TensorAllocator.heap());
        assertEquals(15, oft.layers().size(), "5 projections in each of 3 layers");
        Random rnd = new Random(7);
        for (var p : oft.params()) {
            Tensor v = p.value();
            float[] x = new float[(int) v.numel()];
            for (int i = 0; i < x.length; i++) {
                x[i] = (float) (rnd.nextGaussian() * 0.3);
            }
            v.copyFrom(Tensor.of(x, v.shape()));
        }
        float[] train = model.forwardTrain(seqs, false).logits().toFloatArray();
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] s : seqs) {
            batch.add(new CausalLM.Segment(s, model.newCache(s.length)));
        }
        float[] cached = model.forward(batch).toFloatArray();
        Qwen3FixtureTest.assertClose("OFT logits, latent cache vs training forward", train, cached, 1e-4f);
        float[] base = ref.get("logits").toFloatArray();
        float moved = 0;
        for (int i = 0; i < base.length; i++) {
            moved = Math.max(moved, Math.abs(base[i] - train[i]));
        }
        assertTrue(moved > 1e-2, "the rotations change the logits (max change " + moved + ")");
    }
}
