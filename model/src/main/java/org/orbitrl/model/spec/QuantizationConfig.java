package org.orbitrl.model.spec;

import java.util.List;
import java.util.Map;

/**
 * A checkpoint's {@code quantization_config}: how its stored weights are quantized. One record per
 * {@code quant_method} Orbit reads.
 */
public sealed interface QuantizationConfig {

    /** The {@code quant_method} string. */
    String quantMethod();

    /**
     * {@code compressed-tensors} (Kimi-K2.x INT4): config groups of quantization arguments, each
     * applied to its {@code targets} (layer class names such as {@code Linear}, or {@code re:}
     * regexes on module names), minus the modules matching {@code ignore}.
     *
     * @param format             {@code format}, e.g. {@code pack-quantized}
     * @param configGroups       {@code config_groups} by name, in file order
     * @param ignore             {@code ignore}: module names or {@code re:} patterns kept unquantized
     * @param quantizationStatus {@code quantization_status}, e.g. {@code compressed}, or null
     */
    record CompressedTensors(String format, Map<String, Group> configGroups, List<String> ignore,
                             String quantizationStatus) implements QuantizationConfig {
        public CompressedTensors {
            if (format == null || format.isEmpty()) {
                throw new IllegalArgumentException("compressed-tensors format must be given");
            }
            configGroups = java.util.Collections.unmodifiableMap(new java.util.LinkedHashMap<>(configGroups));
            ignore = List.copyOf(ignore);
            if (configGroups.isEmpty()) {
                throw new IllegalArgumentException("compressed-tensors config_groups must not be empty");
            }
        }

        @Override
        public String quantMethod() {
            return "compressed-tensors";
        }
    }

    /**
     * One compressed-tensors config group.
     *
     * @param targets           what it applies to ({@code Linear}, or {@code re:} patterns)
     * @param weights           the weight quantization arguments
     * @param inputActivations  input activation arguments, or null (weight-only)
     */
    record Group(List<String> targets, QuantArgs weights, QuantArgs inputActivations) {
        public Group {
            targets = List.copyOf(targets);
            if (weights == null) {
                throw new IllegalArgumentException("a config group needs weights arguments");
            }
        }
    }

    /**
     * compressed-tensors quantization arguments.
     *
     * @param numBits   {@code num_bits}
     * @param type      {@code type}: {@code int} or {@code float}
     * @param strategy  {@code strategy}: {@code group}, {@code channel}, {@code tensor}, {@code block}
     * @param groupSize {@code group_size}, 0 unless the strategy is group
     * @param symmetric {@code symmetric} (false means a zero point per group)
     * @param dynamic   {@code dynamic}
     */
    record QuantArgs(int numBits, String type, String strategy, int groupSize, boolean symmetric, boolean dynamic) {
        public QuantArgs {
            if (numBits <= 0 || numBits > 16) {
                throw new IllegalArgumentException("num_bits must be in [1, 16], got " + numBits);
            }
            if ("group".equals(strategy) && groupSize <= 0) {
                throw new IllegalArgumentException("group strategy needs a positive group_size, got " + groupSize);
            }
        }
    }

    /**
     * {@code fp8} (DeepSeek-V3/V4, Kimi-K2-Instruct): E4M3 weights with one scale
     * ({@code weight_scale_inv}) per {@code weightBlockSize} block.
     *
     * @param fmt              {@code fmt}: {@code e4m3}
     * @param weightBlockSize  {@code weight_block_size}: [rows, cols] per scale, e.g. [128, 128]
     * @param activationScheme {@code activation_scheme}: {@code dynamic} or {@code static}
     * @param scaleFmt         {@code scale_fmt}: {@code ue8m0} (power-of-two scales) or null (f32 scales)
     */
    record Fp8(String fmt, List<Integer> weightBlockSize, String activationScheme, String scaleFmt)
            implements QuantizationConfig {
        public Fp8 {
            weightBlockSize = List.copyOf(weightBlockSize);
            if (weightBlockSize.size() != 2 || weightBlockSize.get(0) <= 0 || weightBlockSize.get(1) <= 0) {
                throw new IllegalArgumentException("weight_block_size must be two positive integers, got " + weightBlockSize);
            }
            if (!"e4m3".equals(fmt)) {
                throw new IllegalArgumentException("fp8 fmt must be e4m3, got " + fmt);
            }
        }

        @Override
        public String quantMethod() {
            return "fp8";
        }

        /** True when the scales are powers of two stored as UE8M0. */
        public boolean ue8m0Scales() {
            return "ue8m0".equals(scaleFmt);
        }
    }

    /**
     * {@code mxfp4} (gpt-oss): expert weights as E2M1 blocks of 32 with E8M0 scales
     * ({@code *_blocks}, {@code *_scales}); modules matching {@code modulesToNotConvert} stay bf16.
     */
    record Mxfp4(List<String> modulesToNotConvert) implements QuantizationConfig {
        public Mxfp4 {
            modulesToNotConvert = List.copyOf(modulesToNotConvert);
        }

        @Override
        public String quantMethod() {
            return "mxfp4";
        }
    }
}
