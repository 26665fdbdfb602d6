package org.orbitrl.model.adapter;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * A PEFT adapter configuration ({@code adapter_config.json}) for the adapter types Orbit trains:
 * LoRA (on linears through {@code target_modules}, on fused 3-D expert parameters through
 * {@code target_parameters}) and OFT (on linears through {@code target_modules}). Options that
 * would change the math in ways Orbit does not implement (DoRA, LoRA bias, fan_in_fan_out,
 * rank/alpha patterns, OFT module dropout, excluded modules, modules to save) are refused with
 * the key named.
 *
 * @param type             {@code LORA} or {@code OFT}
 * @param rank             LoRA r (for OFT, its {@code r}: blocks per layer, or 0)
 * @param alpha            LoRA alpha
 * @param rslora           scale by alpha/sqrt(r) instead of alpha/r
 * @param targetModules    module-name suffixes to adapt
 * @param targetParameters parameter-name suffixes of fused expert weights to adapt (LoRA only)
 * @param oft              the OFT options, null for LoRA
 * @param raw              the original JSON, written back on save so PEFT sees every key it wrote
 */
public record AdapterConfig(String type, int rank, double alpha, boolean rslora, List<String> targetModules,
                            List<String> targetParameters, OftSettings oft, ObjectNode raw) {

    public AdapterConfig {
        if (!type.equals("LORA") && !type.equals("OFT")) {
            throw new IllegalArgumentException("peft_type " + type + " is not supported (expected LORA or OFT)");
        }
        if (type.equals("LORA") && rank <= 0) {
            throw new IllegalArgumentException("LoRA r must be positive, got " + rank);
        }
        if (type.equals("OFT") && oft == null) {
            throw new IllegalArgumentException("an OFT config needs its OFT options");
        }
        if (type.equals("OFT") && !targetParameters.isEmpty()) {
            throw new IllegalArgumentException("OFT adapts linear modules only; target_parameters must be empty, got "
                    + targetParameters);
        }
        if (targetModules.isEmpty() && targetParameters.isEmpty()) {
            throw new IllegalArgumentException("adapter targets nothing: target_modules and target_parameters are empty");
        }
        targetModules = List.copyOf(targetModules);
        targetParameters = List.copyOf(targetParameters);
    }

    /** The LoRA scale: alpha/r, or alpha/sqrt(r) with rsLoRA. */
    public float scale() {
        return (float) (rslora ? alpha / Math.sqrt(rank) : alpha / rank);
    }

    /** A LoRA configuration with PEFT's keys and defaults. */
    public static AdapterConfig lora(int rank, double alpha, List<String> targetModules, List<String> targetParameters) {
        ObjectNode n = new ObjectMapper().createObjectNode();
        n.put("peft_type", "LORA");
        n.put("r", rank);
        n.put("lora_alpha", alpha);
        n.put("lora_dropout", 0.0);
        n.put("bias", "none");
        n.put("fan_in_fan_out", false);
        n.put("use_rslora", false);
        n.put("use_dora", false);
        n.put("init_lora_weights", true);
        n.put("inference_mode", true);
        ArrayNode tm = n.putArray("target_modules");
        targetModules.forEach(tm::add);
        if (targetParameters.isEmpty()) {
            n.putNull("target_parameters");
        } else {
            ArrayNode tp = n.putArray("target_parameters");
            targetParameters.forEach(tp::add);
        }
        n.putNull("task_type");
        return new AdapterConfig("LORA", rank, alpha, false, targetModules, targetParameters, null, n);
    }

    /** An OFT configuration with the keys and defaults PEFT 0.21 writes ({@code init_weights}: identity). */
    public static AdapterConfig oft(OftSettings s, List<String> targetModules) {
        ObjectNode n = new ObjectMapper().createObjectNode();
        n.putNull("base_model_name_or_path");
        n.put("bias", "none");
        n.put("block_share", s.blockShare());
        n.put("coft", s.coft());
        n.put("eps", s.eps());
        n.putNull("exclude_modules");
        n.put("fan_in_fan_out", false);
        n.put("inference_mode", true);
        n.put("init_weights", true);
        n.putNull("layers_pattern");
        n.putNull("layers_to_transform");
        n.put("module_dropout", 0.0);
        n.putNull("modules_to_save");
        n.put("num_cayley_neumann_terms", s.neumannTerms());
        n.put("oft_block_size", s.blockSize());
        n.put("peft_type", "OFT");
        n.put("peft_version", "0.21.0");
        n.put("r", s.r());
        n.putNull("revision");
        ArrayNode tm = n.putArray("target_modules");
        targetModules.forEach(tm::add);
        n.putNull("task_type");
        n.put("use_cayley_neumann", s.cayleyNeumann());
        return new AdapterConfig("OFT", s.r(), 0, false, targetModules, List.of(), s, n);
    }

    /** Reads {@code adapter_config.json} from an adapter directory (or the file itself). */
    public static AdapterConfig read(Path dirOrFile) {
        Path file = Files.isDirectory(dirOrFile) ? dirOrFile.resolve("adapter_config.json") : dirOrFile;
        JsonNode n;
        try {
            n = new ObjectMapper().readTree(file.toFile());
        } catch (IOException e) {
            throw new IllegalArgumentException(file + ": cannot read adapter config: " + e.getMessage(), e);
        }
        if (n == null || !n.isObject()) {
            throw new IllegalArgumentException(file + ": adapter config must be a JSON object");
        }
        String type = text(file, n, "peft_type");
        refuse(file, n, "use_dora", true);
        refuse(file, n, "fan_in_fan_out", true);
        refuse(file, n, "lora_bias", true);
        if (n.has("bias") && !n.get("bias").asText().equals("none")) {
            throw new IllegalArgumentException(file + ": bias=" + n.get("bias").asText() + " is not supported (expected \"none\")");
        }
        for (String k : List.of("rank_pattern", "alpha_pattern")) {
            if (n.has(k) && n.get(k).isObject() && !n.get(k).isEmpty()) {
                throw new IllegalArgumentException(file + ": " + k + " is not supported (must be empty)");
            }
        }
        for (String k : List.of("layers_to_transform", "exclude_modules", "modules_to_save")) {
            if (n.has(k) && !n.get(k).isNull() && !(n.get(k).isContainerNode() && n.get(k).isEmpty())) {
                throw new IllegalArgumentException(file + ": " + k + " is not supported (must be null)");
            }
        }
        List<String> tm = list(file, n, "target_modules");
        List<String> tp = list(file, n, "target_parameters");
        if (type.equals("LORA")) {
            int r = integer(file, n, "r");
            double alpha = number(file, n, "lora_alpha");
            try {
                return new AdapterConfig(type, r, alpha, n.path("use_rslora").asBoolean(false), tm, tp, null, (ObjectNode) n);
            } catch (IllegalArgumentException e) {   // the record's own rules (a rank, something to adapt)
                throw new IllegalArgumentException(file + ": " + e.getMessage(), e);
            }
        }
        if (!type.equals("OFT")) {
            throw new IllegalArgumentException(file + ": peft_type " + type + " is not supported (expected LORA or OFT)");
        }
        if (!n.has("oft_block_size")) {
            throw new IllegalArgumentException(file + ": no key \"oft_block_size\": an OFT adapter from peft before"
                    + " 0.14 (a different parameterisation), which is not supported");
        }
        if (n.has("module_dropout") && number(file, n, "module_dropout") != 0) {
            throw new IllegalArgumentException(file + ": module_dropout=" + n.get("module_dropout").asText()
                    + " is not supported (must be 0)");
        }
        int r = n.has("r") ? integer(file, n, "r") : 0;
        OftSettings oft;
        try {
            oft = new OftSettings(r, integer(file, n, "oft_block_size"), bool(file, n, "coft", false),
                    n.has("eps") ? number(file, n, "eps") : 6e-5, bool(file, n, "block_share", false),
                    bool(file, n, "use_cayley_neumann", true),
                    n.has("num_cayley_neumann_terms") ? integer(file, n, "num_cayley_neumann_terms") : 5);
            return new AdapterConfig(type, r, 0, false, tm, tp, oft, (ObjectNode) n);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(file + ": " + e.getMessage(), e);
        }
    }

    public void write(Path dir) throws IOException {
        Files.createDirectories(dir);
        new ObjectMapper().writerWithDefaultPrettyPrinter().writeValue(dir.resolve("adapter_config.json").toFile(), raw);
    }

    private static void refuse(Path file, JsonNode n, String key, boolean value) {
        if (n.has(key) && n.get(key).isBoolean() && n.get(key).asBoolean() == value) {
            throw new IllegalArgumentException(file + ": " + key + "=" + value + " is not supported");
        }
    }

    private static boolean bool(Path file, JsonNode n, String key, boolean dflt) {
        JsonNode v = n.get(key);
        if (v == null || v.isNull()) {
            return dflt;
        }
        if (!v.isBoolean()) {
            throw new IllegalArgumentException(file + ": key \"" + key + "\" must be true or false");
        }
        return v.asBoolean();
    }

    private static String text(Path file, JsonNode n, String key) {
        JsonNode v = n.get(key);
        if (v == null || !v.isTextual()) {
            throw new IllegalArgumentException(file + ": key \"" + key + "\" must be a string");
        }
        return v.asText();
    }

    private static int integer(Path file, JsonNode n, String key) {
        JsonNode v = n.get(key);
        if (v == null || !v.canConvertToInt() || !v.isIntegralNumber()) {
            throw new IllegalArgumentException(file + ": key \"" + key + "\" must be an integer");
        }
        return v.asInt();
    }

    private static double number(Path file, JsonNode n, String key) {
        JsonNode v = n.get(key);
        if (v == null || !v.isNumber()) {
            throw new IllegalArgumentException(file + ": key \"" + key + "\" must be a number");
        }
        return v.asDouble();
    }

    private static List<String> list(Path file, JsonNode n, String key) {
        JsonNode v = n.get(key);
        List<String> out = new ArrayList<>();
        if (v == null || v.isNull()) {
            return out;
        }
        if (v.isTextual()) {
            throw new IllegalArgumentException(file + ": key \"" + key
                    + "\" as a regular expression is not supported; give a list of module names");
        }
        if (!v.isArray()) {
            throw new IllegalArgumentException(file + ": key \"" + key + "\" must be a list of strings");
        }
        v.forEach(e -> out.add(e.asText()));
        return out;
    }
}
