package org.orbitrl.model.adapter;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.checkpoint.CheckpointException;

/**
 * A damaged PEFT adapter directory (its {@code adapter_config.json} edited: a value replaced by another type or an
 * out-of-range number, a key removed, target lists changed) loaded onto the fixture model it was made for: it loads,
 * or it is refused with a message that names the config file or the adapter's weights file. No other exception
 * escapes.
 */
class AdapterFilesFuzzTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final String[] VALUES = {
        "0", "-1", "1", "2", "8", "64", "2147483648", "1e308", "0.5", "\"x\"", "\"\"", "null", "true", "false", "[]",
        "[\"q_proj\"]", "[\"nothing\"]", "[\"mlp.experts.down_proj\"]", "{}", "\"LORA\"", "\"OFT\"", "\"none\"", "[1, 2]",
    };
    private static final List<String> KEYS = List.of("r", "lora_alpha", "target_modules", "target_parameters", "peft_type",
            "bias", "use_rslora", "fan_in_fan_out", "lora_dropout", "modules_to_save", "use_dora", "layers_to_transform",
            "rank_pattern", "alpha_pattern", "oft_block_size");

    @TempDir
    Path tmp;

    @Test
    void everyEditedAdapterLoadsOrNamesItsFile() throws Exception {
        Random rnd = new Random(20261204);
        int loaded = 0;
        int refused = 0;
        for (String arch : List.of("qwen3_moe", "gpt_oss")) {
            Path fixture = TestSafetensors.fixtures().resolve(arch);
            ObjectNode original = (ObjectNode) JSON.readTree(fixture.resolve("adapter/adapter_config.json").toFile());
            try (LoadedModel m = LoadedModel.load(fixture, new CpuBackend(1), BaseFormat.BF16)) {
                for (int trial = 0; trial < 200; trial++) {
                    ObjectNode edited = original.deepCopy();
                    for (int e = 1 + rnd.nextInt(2); e > 0; e--) {
                        String key = KEYS.get(rnd.nextInt(KEYS.size()));
                        if (rnd.nextInt(5) == 0) {
                            edited.remove(key);
                        } else {
                            JsonNode v = JSON.readTree(VALUES[rnd.nextInt(VALUES.length)]);
                            edited.set(key, v);
                        }
                    }
                    Path dir = Files.createDirectories(tmp.resolve(arch + "-" + trial));
                    JSON.writeValue(dir.resolve("adapter_config.json").toFile(), edited);
                    Files.copy(fixture.resolve("adapter/adapter_model.safetensors"), dir.resolve("adapter_model.safetensors"));
                    try {
                        m.loadAdapter(dir);
                        loaded++;
                    } catch (IllegalArgumentException | CheckpointException e) {
                        String msg = String.valueOf(e.getMessage());
                        assertTrue(msg.contains(dir.toString()), "names the adapter's file: " + msg + "\nconfig: " + edited);
                        refused++;
                    } catch (RuntimeException e) {
                        fail(arch + ", edit " + trial + " threw " + e + ":\n" + edited, e);
                    }
                }
            }
        }
        assertTrue(loaded >= 20 && refused >= 150, "loaded " + loaded + ", refused " + refused);
    }
}
