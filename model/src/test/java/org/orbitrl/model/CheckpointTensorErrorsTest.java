package org.orbitrl.model;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.io.IOException;
import java.nio.file.Path;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.BiFunction;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A model folder whose safetensors hold a projection of a dtype the loader does not take (f16) or lack one (renamed): the
 * load is refused with the model's folder, the tensor's name, what it found and what was expected. The Qwen3 fixture,
 * rewritten with that one change.
 */
class CheckpointTensorErrorsTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Path FIXTURE = TestSafetensors.fixtures().resolve("qwen3");
    private static final String Q = "model.layers.0.self_attn.q_proj";

    @TempDir
    Path tmp;

    /** The fixture with {@code change} applied to every tensor (it returns the tensor to keep under the name, or null). */
    private Path rewritten(String name, BiFunction<String, Tensor, Map.Entry<String, Tensor>> change) throws IOException {
        TestSafetensors src = new TestSafetensors(FIXTURE.resolve("model.safetensors"));
        Map<String, Tensor> out = new TreeMap<>();
        for (String n : src.names()) {
            Map.Entry<String, Tensor> e = change.apply(n, src.get(n));
            out.put(e.getKey(), e.getValue());
        }
        ObjectNode config = (ObjectNode) JSON.readTree(FIXTURE.resolve("config.json").toFile());
        return DeepseekV3FormatsTest.write(tmp.resolve(name), config, out);
    }

    @Test
    void anF16ProjectionIsRefusedNamingTheFolderTheTensorAndTheDtypes() throws IOException {
        Path dir = rewritten("f16", (n, t) -> Map.entry(n, n.equals(Q + ".weight") ? t.to(DType.F16) : t));
        var e = assertThrows(IllegalArgumentException.class, () -> LoadedModel.load(dir, Backends.cpu(), BaseFormat.BF16).close());
        String m = e.getMessage();
        assertTrue(m.startsWith(dir + ": "), m);
        assertTrue(m.contains(Q + ".weight is f16 ["), m);
        assertTrue(m.contains("expected bf16, f32, or fp8 e4m3"), m);
    }

    @Test
    void aMissingProjectionIsRefusedNamingTheFolderAndTheNamesLookedFor() throws IOException {
        Path dir = rewritten("renamed", (n, t) -> Map.entry(n.equals(Q + ".weight") ? Q + ".weights" : n, t));
        var e = assertThrows(IllegalArgumentException.class, () -> LoadedModel.load(dir, Backends.cpu(), BaseFormat.BF16).close());
        String m = e.getMessage();
        assertTrue(m.startsWith(dir + ": "), m);
        assertTrue(m.contains("no weight for " + Q + " (looked for " + Q + ".weight and " + Q + ".weight_packed)"), m);
    }
}
