package org.orbitrl.model.arch.dsv4;

import org.orbitrl.model.nn.WeightLoader;
import org.orbitrl.model.nn.WeightSource;

import java.util.Set;

/** Reads a small projection that the model applies on the host ({@code wo_a}) as f32 [out, in]. */
final class DeepseekV4Dequant {
    private DeepseekV4Dequant() {
    }

    static float[] dense(WeightLoader w, WeightSource src, Set<String> used, String module, int out, int in) {
        return w.tensor(module + ".weight", out, in).toFloatArray();
    }
}
