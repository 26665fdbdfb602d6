package org.orbitrl.memory.plan;

import java.util.EnumMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.QuantizationConfig;

/**
 * The storage format of the frozen base, per parameter family. Families not listed are BF16;
 * vectors (norms, biases, sinks, mixing parameters) are always BF16, and the router's saved
 * buffers keep their own types (f32 score-correction bias, i32 hash table).
 *
 * @param name    how it was asked for ({@code int4}, {@code experts=int4,attention=fp8}, ...)
 * @param formats format per family
 */
public record BaseFormat(String name, Map<ParamFamily, StorageFormat> formats) {

    /** The presets, by name, with what ships in that format. */
    public static final List<String> PRESETS = List.of(
            "bf16      every weight bf16",
            "int4      INT4 group-32 routed experts, the rest bf16 (Kimi-K2.x as shipped)",
            "fp4       MXFP4 routed experts, FP8 block-128 attention/shared/dense, embeddings and head bf16 (DeepSeek V4 as shipped)",
            "mxfp4     MXFP4 routed experts, the rest bf16 (gpt-oss as shipped)",
            "nvfp4     NVFP4 routed experts, the rest bf16",
            "fp8       FP8 block-128 for every projection but the router and head (DeepSeek-V3, Kimi-K2-Instruct as shipped)",
            "native    what the model's own config.json says it ships");

    /** The family names of {@code family=format} pairs. */
    private static final Map<ParamFamily, String> PAIR_NAMES = Map.of(ParamFamily.ROUTED_EXPERTS, "experts",
            ParamFamily.SHARED_EXPERTS, "shared", ParamFamily.ATTENTION, "attention", ParamFamily.DENSE_MLP, "dense",
            ParamFamily.EMBEDDING, "embedding", ParamFamily.OUTPUT_HEAD, "head", ParamFamily.ROUTER, "router");

    public BaseFormat {
        EnumMap<ParamFamily, StorageFormat> m = new EnumMap<>(ParamFamily.class);
        for (ParamFamily f : ParamFamily.values()) {
            m.put(f, formats.getOrDefault(f, StorageFormat.BF16));
        }
        formats = Map.copyOf(m);
    }

    /** Format of family {@code f}. */
    public StorageFormat of(ParamFamily f) {
        return formats.get(f);
    }

    /** True if any family is stored below bf16. */
    public boolean anyQuantized() {
        return formats.values().stream().anyMatch(StorageFormat::isQuantized);
    }

    /**
     * This format with the routed experts held as {@code f}, named as {@code --base} takes it: a preset where one
     * holds the same formats, else its {@code family=format} pairs ({@code experts=int4,attention=fp8,...}).
     */
    public BaseFormat withRoutedExperts(StorageFormat f) {
        EnumMap<ParamFamily, StorageFormat> m = new EnumMap<>(formats);
        m.put(ParamFamily.ROUTED_EXPERTS, f);
        for (String preset : PRESETS) {
            String p = preset.split(" ")[0];
            if (!p.equals("native") && parse(p).formats().equals(m)) {
                return new BaseFormat(p, m);
            }
        }
        List<String> pairs = new java.util.ArrayList<>();
        for (ParamFamily family : ParamFamily.values()) {
            if (PAIR_NAMES.containsKey(family) && m.get(family) != StorageFormat.BF16) {
                pairs.add(PAIR_NAMES.get(family) + "=" + m.get(family).id());
            }
        }
        return new BaseFormat(String.join(",", pairs), m);
    }

    /** Every weight BF16. */
    public static BaseFormat bf16() {
        return new BaseFormat("bf16", Map.of());
    }

    /**
     * A preset ({@code bf16}, {@code int4}, {@code fp4}, {@code mxfp4}, {@code nvfp4}, {@code fp8}) or
     * a list of {@code family=format} pairs ({@code experts=int4,attention=fp8}); {@code native} needs
     * the spec, see {@link #parse(String, ModelSpec)}.
     */
    public static BaseFormat parse(String s) {
        return parse(s, null);
    }

    /** As {@link #parse(String)}, resolving {@code native} from {@code spec}'s quantization config. */
    public static BaseFormat parse(String s, ModelSpec spec) {
        String k = s.trim().toLowerCase(Locale.ROOT);
        EnumMap<ParamFamily, StorageFormat> m = new EnumMap<>(ParamFamily.class);
        switch (k) {
            case "bf16" -> { }
            case "int4" -> m.put(ParamFamily.ROUTED_EXPERTS, StorageFormat.INT4_G32);
            case "mxfp4" -> m.put(ParamFamily.ROUTED_EXPERTS, StorageFormat.MXFP4);
            case "nvfp4" -> m.put(ParamFamily.ROUTED_EXPERTS, StorageFormat.NVFP4);
            case "fp4" -> {
                m.put(ParamFamily.ROUTED_EXPERTS, StorageFormat.MXFP4);
                m.put(ParamFamily.ATTENTION, StorageFormat.FP8_BLOCK128);
                m.put(ParamFamily.SHARED_EXPERTS, StorageFormat.FP8_BLOCK128);
                m.put(ParamFamily.DENSE_MLP, StorageFormat.FP8_BLOCK128);
            }
            case "fp8" -> {
                m.put(ParamFamily.ROUTED_EXPERTS, StorageFormat.FP8_BLOCK128);
                m.put(ParamFamily.ATTENTION, StorageFormat.FP8_BLOCK128);
                m.put(ParamFamily.SHARED_EXPERTS, StorageFormat.FP8_BLOCK128);
                m.put(ParamFamily.DENSE_MLP, StorageFormat.FP8_BLOCK128);
            }
            case "native" -> {
                if (spec == null) {
                    throw new IllegalArgumentException("base format 'native' needs the model's config");
                }
                return new BaseFormat("native (" + nativePreset(spec) + ")", parse(nativePreset(spec)).formats());
            }
            default -> {
                if (!k.contains("=")) {
                    throw new IllegalArgumentException("unknown base format '" + s + "'; expected a preset ("
                            + String.join(", ", PRESETS.stream().map(p -> p.split(" ")[0]).toList())
                            + ") or family=format pairs such as experts=int4,attention=fp8");
                }
                for (String pair : k.split(",")) {
                    String[] kv = pair.split("=", 2);
                    ParamFamily f = kv.length == 2 ? ParamFamily.parse(kv[0]) : null;
                    if (f == null) {
                        throw new IllegalArgumentException("base format '" + s + "': '" + pair
                                + "' is not family=format (families: experts, shared, attention, dense, embedding, head, router)");
                    }
                    m.put(f, StorageFormat.parse(kv[1]));
                }
            }
        }
        return new BaseFormat(k, m);
    }

    /** The preset that matches what the checkpoint of {@code spec} ships. */
    public static String nativePreset(ModelSpec spec) {
        QuantizationConfig q = spec.quantization();
        String expertDtype = spec.deepseekV4() == null ? null : spec.deepseekV4().expertDtype();
        if ("fp4".equalsIgnoreCase(expertDtype)) {
            return "fp4";
        }
        if (q == null) {
            return "bf16";
        }
        if (q instanceof QuantizationConfig.CompressedTensors) {
            return "int4";
        }
        if (q instanceof QuantizationConfig.Fp8) {
            return "fp8";
        }
        if (q instanceof QuantizationConfig.Mxfp4) {
            return "mxfp4";
        }
        throw new IllegalArgumentException("no base-format preset matches the quantization_config of " + spec.modelType()
                + " (" + q.quantMethod() + "); name one with --base");
    }

    /** Device bytes of one weight group in this format. */
    public long bytes(WeightGroup g) {
        if (g.buffer() || g.f32()) {
            return Math.multiplyExact(g.numel(), 4L);      // f32 correction bias, i32 hash table, a parameter held in f32
        }
        StorageFormat f = of(g.family());
        if (g.shape().length == 2 && f.isQuantized()) {
            return Math.multiplyExact(f.bytes(g.rows(), g.cols()), g.count());
        }
        return Math.multiplyExact(g.numel(), f == StorageFormat.F32 ? 4L : 2L);
    }

    @Override
    public String toString() {
        return name;
    }
}
