package org.orbitrl.model.checkpoint;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

/**
 * The fixture checkpoints, written by the Python safetensors library, read with the names,
 * dtypes and shapes their {@code fixture.json} manifests list, hold values consistent with the
 * reference outputs, and our writer reproduces those files byte for byte.
 */
class FixtureCheckpointTest {
    private static final List<String> ARCHS = List.of("qwen3", "qwen3_moe", "deepseek_v3", "deepseek_v4", "gpt_oss");
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    Path tmp;

    @Test
    void everyTensorMatchesTheManifest() throws IOException {
        for (String arch : ARCHS) {
            Path dir = Fixtures.hf().resolve(arch);
            JsonNode manifest = JSON.readTree(dir.resolve("fixture.json").toFile()).get("files").get("model.safetensors");
            Set<String> expected = new HashSet<>();
            manifest.fieldNames().forEachRemaining(expected::add);
            assertTrue(expected.size() > 10, arch + " manifest lists " + expected.size() + " tensors");
            try (Checkpoint c = Checkpoint.open(dir)) {
                c.requireExactly(expected);
                for (String name : expected) {
                    JsonNode m = manifest.get(name);
                    long[] shape = new long[m.get("shape").size()];
                    for (int i = 0; i < shape.length; i++) {
                        shape[i] = m.get("shape").get(i).asLong();
                    }
                    DType dt = DType.fromSafetensors(m.get("dtype").asText());
                    Tensor t = c.tensor(name, dt, shape);
                    assertEquals(dt, t.dtype(), arch + " " + name);
                }
            }
        }
    }

    @Test
    void namedTensorsHaveTheirArchitectureShapes() {
        try (Checkpoint c = Checkpoint.open(Fixtures.hf().resolve("deepseek_v3"))) {
            // MLA: kv_a_proj_with_mqa is [kv_lora_rank + qk_rope_head_dim, hidden] = [16 + 8, 64]
            c.tensor("model.layers.0.self_attn.kv_a_proj_with_mqa.weight", DType.BF16, 24, 64);
            c.tensor("model.layers.1.mlp.gate.e_score_correction_bias", null, 8);
        }
        try (Checkpoint c = Checkpoint.open(Fixtures.hf().resolve("gpt_oss"))) {
            c.tensor("model.layers.0.mlp.experts.gate_up_proj", DType.BF16, 8, 64, 64);
            c.tensor("model.layers.0.self_attn.sinks", DType.BF16, 4);
        }
        try (SafetensorsFile f = SafetensorsFile.open(Fixtures.hf().resolve("mxfp4/mxfp4.safetensors"))) {
            assertEquals(DType.U8, f.info("blocks").dtype());
            assertArrayEquals(new long[] {4, 48, 6, 16}, f.info("blocks").shape());
            assertArrayEquals(new long[] {4, 48, 6}, f.info("scales").shape());
            assertArrayEquals(new long[] {4, 192, 48}, f.info("dequantized").shape());
        }
    }

    /** hidden_states.0 of the reference is the embedding lookup: exact, from the bf16 table. */
    @Test
    void embeddingRowsMatchReferenceHiddenStateZero() {
        for (String arch : List.of("qwen3", "qwen3_moe", "deepseek_v3", "gpt_oss")) {
            Path dir = Fixtures.hf().resolve(arch);
            try (Checkpoint model = Checkpoint.open(dir);
                 SafetensorsFile ref = SafetensorsFile.open(dir.resolve("reference.safetensors"))) {
                Tensor emb = model.tensor("model.embed_tokens.weight", DType.BF16, 256, 64);
                Tensor ids = ref.tensor("input_ids");
                Tensor h0 = ref.tensor("hidden_states.0");
                assertArrayEquals(new long[] {2, 24, 64}, h0.shape());
                int mismatches = 0;
                for (int b = 0; b < 2; b++) {
                    for (int t = 0; t < 24; t++) {
                        long id = ids.getLong(b, t);
                        for (int j = 0; j < 64; j++) {
                            float want = h0.getFloat(b, t, j);
                            float got = emb.getFloat(id, j);
                            if (want != got && mismatches++ < 5) {
                                System.out.printf("%s [%d,%d,%d] id %d: %g vs %g%n", arch, b, t, j, id, got, want);
                            }
                        }
                    }
                }
                assertEquals(0, mismatches, arch + ": embedding rows differ from hidden_states.0 (tolerance 0)");
            }
        }
    }

    /** Our writer lays files out exactly as the reference writer did: same header, same bytes. */
    @Test
    void rewritingAFixtureReproducesItByteForByte() throws IOException {
        for (String rel : List.of("qwen3/model.safetensors", "deepseek_v4/model.safetensors", "mxfp4/mxfp4.safetensors",
                "gpt_oss/reference.safetensors")) {
            Path src = Fixtures.hf().resolve(rel);
            Path out = tmp.resolve(rel.replace('/', '_'));
            try (SafetensorsFile f = SafetensorsFile.open(src)) {
                SafetensorsWriter w = new SafetensorsWriter();
                f.metadata().forEach(w::metadata);
                for (String name : f.tensors().keySet()) {
                    w.add(name, f.tensor(name));
                }
                w.write(out);
            }
            byte[] want = Files.readAllBytes(src);
            byte[] got = Files.readAllBytes(out);
            assertEquals(want.length, got.length, rel);
            int first = java.util.Arrays.mismatch(want, got);
            assertEquals(-1, first, rel + ": first differing byte at " + first);
        }
    }
}
