package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.quant.Fp8Block128;
import org.orbitrl.kernels.quant.Fp8Block128Ue8m0;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Placement;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.nn.WeightLoader;
import org.orbitrl.model.nn.WeightSource;
import org.orbitrl.model.spec.QuantizationConfig;

import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * Reads a DeepSeek-V3-architecture checkpoint in any of the layouts its releases use:
 * <ul>
 *   <li>bf16/f32 {@code <module>.weight} everywhere (Hugging Face export);</li>
 *   <li>Kimi-K2.x compressed-tensors {@code pack-quantized} INT4 group-32 ({@code weight_packed},
 *       {@code weight_scale}, {@code weight_shape}) for every module not in the config's
 *       {@code ignore} list, which must hold the others in bf16;</li>
 *   <li>DeepSeek-V3 {@code fp8} E4M3 {@code weight} with f32 {@code weight_scale_inv} per 128x128
 *       block; with {@code scale_fmt: ue8m0} the scales must be powers of two and are held as E8M0.</li>
 * </ul>
 * Kimi-K2.5's multimodal checkpoint keeps the text model under {@code language_model.}; tensors
 * outside it (the vision tower) and the multi-token-prediction layers after the last decoder
 * layer are not read. Every other tensor must be used.
 */
final class DeepseekV3Loader {
    static final String KIMI_PREFIX = "language_model.";

    private final DeepseekV3Config c;
    private final WeightSource src;
    private final WeightLoader weights;
    private final Set<String> used = new HashSet<>();
    private final QuantizationConfig quant;
    private final Qwen3Model.LoadOptions options;
    private final List<Pattern> ignore;
    private final TensorAllocator place;   // where base weights go: the backend's memory
    private final org.orbitrl.model.parallel.RankGroups groups;   // null: the whole model on one rank
    private final org.orbitrl.model.parallel.ShardedWeights sharded;   // this rank's view of src under groups

    private DeepseekV3Loader(DeepseekV3Config c, WeightSource full, QuantizationConfig quant,
                             Qwen3Model.LoadOptions options, TensorAllocator place, org.orbitrl.model.parallel.RankGroups groups) {
        this.c = c;
        this.place = place;
        this.groups = groups;
        if (groups != null) {
            var layout = groups.layout();
            if (layout.tp() > 1) {
                throw new IllegalArgumentException(c.modelType() + ": tensor parallelism is not available for the latent"
                        + " attention models (tp " + layout.tp() + "); split the routed experts with expert parallelism");
            }
            if (c.experts() % layout.ep() != 0) {
                throw new IllegalArgumentException(c.modelType() + ": " + c.experts() + " routed experts do not split into "
                        + layout.ep() + " equal blocks (expert_parallel " + layout.ep() + ")");
            }
            this.sharded = new org.orbitrl.model.parallel.ShardedWeights(full, layout, groups.rank(), c.experts());
        } else {
            this.sharded = null;
        }
        WeightSource src = sharded != null ? sharded : full;
        this.src = src;
        this.weights = new WeightLoader(src, used);
        this.quant = quant;
        this.options = options;
        this.ignore = quant instanceof QuantizationConfig.CompressedTensors ct
                ? ct.ignore().stream().map(DeepseekV3Loader::pattern).toList() : List.of();
        if (quant instanceof QuantizationConfig.CompressedTensors ct) {
            if (!"pack-quantized".equals(ct.format())) {
                throw new IllegalArgumentException("compressed-tensors format " + ct.format()
                        + " is not supported (pack-quantized INT4 group-32)");
            }
            for (var g : ct.configGroups().entrySet()) {
                var w = g.getValue().weights();
                if (w.numBits() != 4 || !"int".equals(w.type()) || !"group".equals(w.strategy()) || w.groupSize() != 32) {
                    throw new IllegalArgumentException("compressed-tensors group " + g.getKey() + ": " + w
                            + " is not supported (num_bits 4, type int, strategy group, group_size 32)");
                }
            }
        }
        if (quant instanceof QuantizationConfig.Fp8 f && !f.weightBlockSize().equals(List.of(128, 128))) {
            throw new IllegalArgumentException("fp8 weight_block_size " + f.weightBlockSize() + " is not supported ([128, 128])");
        }
    }

    /** compressed-tensors matching: a {@code re:} regex on the module name, else the exact module name. */
    private static Pattern pattern(String entry) {
        return entry.startsWith("re:") ? Pattern.compile(entry.substring(3)) : Pattern.compile(Pattern.quote(entry));
    }

    /** @param quant the checkpoint's {@code quantization_config}, or null */
    static DeepseekV3Model load(DeepseekV3Config c, boolean interleavedRope, QuantizationConfig quant, WeightSource src,
                                Backend backend, Qwen3Model.LoadOptions options) {
        return load(c, interleavedRope, quant, src, backend, options, null);
    }

    /** As above, holding this rank's block of every MoE layer's routed experts under {@code groups} (expert parallelism). */
    static DeepseekV3Model load(DeepseekV3Config c, boolean interleavedRope, QuantizationConfig quant, WeightSource src,
                                Backend backend, Qwen3Model.LoadOptions options, org.orbitrl.model.parallel.RankGroups groups) {
        return new DeepseekV3Loader(c, src, quant, options, backend.allocator(), groups).build(interleavedRope, backend);
    }

    private DeepseekV3Model build(boolean interleavedRope, Backend backend) {
        String prefix = src.has(KIMI_PREFIX + "model.embed_tokens.weight") ? KIMI_PREFIX : "";
        int h = c.hidden();
        int hq = c.heads();
        Tensor embed = placed(prefix + "model.embed_tokens.weight", c.vocab(), h);
        DeepseekV3Model.Layer[] layers = new DeepseekV3Model.Layer[c.layers()];
        for (int i = 0; i < c.layers(); i++) {
            String p = prefix + "model.layers." + i + ".";
            String a = p + "self_attn.";
            Linear q = null;
            Linear qA = null;
            Linear qB = null;
            Tensor qANorm = null;
            if (c.qLoraRank() > 0) {
                qA = linear(a + "q_a_proj", c.qLoraRank(), h, c.attentionBias());
                qANorm = placed(a + "q_a_layernorm.weight", c.qLoraRank());
                qB = linear(a + "q_b_proj", hq * c.qkHeadDim(), c.qLoraRank(), false);
            } else {
                q = linear(a + "q_proj", hq * c.qkHeadDim(), h, false);
            }
            DeepseekV3Attention attn = new DeepseekV3Attention(i, c, q, qA, qB,
                    linear(a + "kv_a_proj_with_mqa", c.cacheWidth(), h, c.attentionBias()),
                    linear(a + "kv_b_proj", hq * (c.qkNope() + c.vHeadDim()), c.kvLoraRank(), false),
                    linear(a + "o_proj", h, hq * c.vHeadDim(), c.attentionBias()),
                    qANorm, placed(a + "kv_a_layernorm.weight", c.kvLoraRank()));
            DenseMlp mlp = null;
            DeepseekV3Moe moe = null;
            if (c.isMoe(i)) {
                DenseMlp[] experts = DenseMlp.routedExperts(place, p + "mlp.experts.", c.experts(), c.moeIntermediate(), h,
                        e -> sharded == null || sharded.ownsExpert(e), this::weight, options.expertQuantizer());
                DenseMlp shared = c.sharedInter() > 0 ? mlp(p + "mlp.shared_experts.", c.sharedInter()) : null;
                Tensor bias = null;
                if (c.scoreCorrectionBias() || src.has(p + "mlp.gate.e_score_correction_bias")) {
                    // f32 in backend memory: the routing runs there
                    bias = Placement.tensor(place, weights.tensor(p + "mlp.gate.e_score_correction_bias", c.experts()).to(DType.F32));
                }
                Linear router = Placement.linear(place, new Linear(p + "mlp.gate",
                        Weight.of(weights.tensor(p + "mlp.gate.weight", c.experts(), h)), null));
                moe = new DeepseekV3Moe(router, bias, experts, shared, c);
                if (groups != null && groups.layout().ep() > 1) {
                    moe.expertParallel(groups.ep());
                }
            } else {
                mlp = mlp(p + "mlp.", c.intermediate());
            }
            layers[i] = new DeepseekV3Model.Layer(placed(p + "input_layernorm.weight", h),
                    placed(p + "post_attention_layernorm.weight", h), attn, mlp, moe);
        }
        Tensor norm = placed(prefix + "model.norm.weight", h);
        Linear head = c.tieEmbeddings() && !src.has(prefix + "lm_head.weight")
                ? new Linear(prefix + "lm_head", Weight.of(embed), null)
                : linear(prefix + "lm_head", c.vocab(), h, false);
        checkAllUsed(prefix);
        return new DeepseekV3Model(c, backend, prefix, embed, layers, norm, head, interleavedRope);
    }

    private DenseMlp mlp(String p, int inter) {
        int h = c.hidden();
        return new DenseMlp(linear(p + "gate_proj", inter, h, false), linear(p + "up_proj", inter, h, false),
                linear(p + "down_proj", h, inter, false));
    }

    private Linear linear(String module, int out, int in, boolean bias) {
        return Placement.linear(place, new Linear(module, weight(module, out, in), bias ? weights.bias(module, out) : null));
    }

    /** A tensor that must exist with this shape, placed in the backend's memory. */
    private Tensor placed(String name, long... shape) {
        return Placement.tensor(place, weights.tensor(name, shape));
    }

    /** The base weight of {@code module}, checked against the checkpoint's quantization_config. */
    private Weight weight(String module, int out, int in) {
        if (src.has(module + ".weight_scale_inv")) {
            if (!(quant instanceof QuantizationConfig.Fp8)) {
                throw new IllegalArgumentException(module + " is stored as fp8 (weight_scale_inv) but config.json has no "
                        + "fp8 quantization_config");
            }
            Tensor codes = weights.tensor(module + ".weight", out, in);
            Tensor scales = weights.tensor(module + ".weight_scale_inv", (out + 127) / 128, (in + 127) / 128);
            boolean ue8m0 = ((QuantizationConfig.Fp8) quant).ue8m0Scales();
            QuantizedTensor qt = new QuantizedTensor(ue8m0 ? Fp8Block128Ue8m0.INSTANCE : Fp8Block128.INSTANCE, out, in,
                    codes, ue8m0 ? Fp8Block128Ue8m0.scalesFromF32(scales.contiguous().to(org.orbitrl.kernels.DType.F32))
                    : scales);
            return Weight.of(qt);
        }
        boolean packed = src.has(module + ".weight_packed");
        if (quant instanceof QuantizationConfig.CompressedTensors) {
            String name = module.startsWith(KIMI_PREFIX) ? module.substring(KIMI_PREFIX.length()) : module;
            boolean ignored = ignore.stream().anyMatch(pt -> pt.matcher(module).matches() || pt.matcher(name).matches());
            if (ignored && packed) {
                throw new IllegalArgumentException(module + " is in quantization_config.ignore but stored pack-quantized");
            }
            if (!ignored && !packed) {
                throw new IllegalArgumentException(module + " is not in quantization_config.ignore, so it must be stored "
                        + "pack-quantized (" + module + ".weight_packed), but the checkpoint has none");
            }
        } else if (packed) {
            throw new IllegalArgumentException(module + " is stored pack-quantized but config.json has no "
                    + "compressed-tensors quantization_config");
        }
        return weights.weight(module, out, in);
    }

    private void checkAllUsed(String prefix) {
        Set<String> extra = new HashSet<>(src.names());
        extra.removeAll(used);
        extra.removeIf(n -> n.endsWith("rotary_emb.inv_freq") || !n.startsWith(prefix) || isMtp(n.substring(prefix.length())));
        if (!extra.isEmpty()) {
            throw new IllegalArgumentException("checkpoint has tensors a " + c.modelType() + " model does not use: "
                    + extra.stream().sorted().limit(10).toList()
                    + (extra.size() > 10 ? " and " + (extra.size() - 10) + " more" : ""));
        }
    }

    /** A multi-token-prediction layer's tensor: {@code model.layers.K.} with K at or past the decoder layers. */
    private boolean isMtp(String name) {
        if (!name.startsWith("model.layers.")) {
            return false;
        }
        int end = name.indexOf('.', "model.layers.".length());
        try {
            return end > 0 && Integer.parseInt(name.substring("model.layers.".length(), end)) >= c.layers();
        } catch (NumberFormatException e) {
            return false;
        }
    }
}
