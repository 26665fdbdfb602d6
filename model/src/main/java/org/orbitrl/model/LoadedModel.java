package org.orbitrl.model;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.adapter.OftAdapter;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.DeepseekV3Config;
import org.orbitrl.model.arch.DeepseekV3Model;
import org.orbitrl.model.arch.GptOssConfig;
import org.orbitrl.model.arch.GptOssModel;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.arch.dsv4.DeepseekV4Model;
import org.orbitrl.model.checkpoint.Checkpoint;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Path;

/**
 * A model loaded from a Hugging Face directory ({@code config.json} + safetensors), owning the
 * memory-mapped checkpoint its bf16 weights are views of: closing it unmaps them.
 */
public final class LoadedModel implements AutoCloseable {
    private final Path dir;
    private final ModelSpec spec;
    private final Checkpoint checkpoint;
    private final CausalLM model;

    private LoadedModel(Path dir, ModelSpec spec, Checkpoint checkpoint, CausalLM model) {
        this.dir = dir;
        this.spec = spec;
        this.checkpoint = checkpoint;
        this.model = model;
    }

    /** Loads the model in {@code dir} on {@code backend}, holding its bulk weights in {@code format}. */
    public static LoadedModel load(Path dir, Backend backend, BaseFormat format) {
        return load(dir, backend, format, null);
    }

    /**
     * True for the models that load split over ranks (tensor and expert parallelism for qwen3 and qwen3_moe, expert
     * parallelism for deepseek_v3 / kimi_k2); the others load on one device.
     */
    public static boolean splits(ModelSpec spec) {
        return spec.family() == ModelFamily.QWEN3 || spec.family() == ModelFamily.QWEN3_MOE
                || spec.family() == ModelFamily.DEEPSEEK_V3;
    }

    /**
     * As {@link #load(Path, Backend, BaseFormat)}, holding only this rank's share under
     * {@code groups}' parallel layout (null: the whole model).
     */
    public static LoadedModel load(Path dir, Backend backend, BaseFormat format,
                                   org.orbitrl.model.parallel.RankGroups groups) {
        ModelSpec spec = ConfigLoader.load(dir);
        if (groups != null && !splits(spec)) {
            throw new IllegalArgumentException(dir + ": tensor and expert parallelism are available for qwen3 and"
                    + " qwen3_moe, expert parallelism for deepseek_v3 / kimi_k2; model_type " + spec.modelType()
                    + " loads on one device only");
        }
        if (format.quantFormat() == null && spec.moe() != null && spec.family() != ModelFamily.DEEPSEEK_V4
                && spec.quantization() instanceof org.orbitrl.model.spec.QuantizationConfig.Fp8
                && !backend.runsExpertsIn(org.orbitrl.kernels.quant.Fp8Block128.INSTANCE)) {
            throw new IllegalArgumentException(dir + ": the routed experts are stored FP8 block-128 (quantization_config "
                    + "fp8) and this backend's expert kernels take INT4, MXFP4 or NVFP4 experts; load with base format "
                    + "int4, mxfp4 or nvfp4 (the experts quantized on load from their FP8 values)");
        }
        Checkpoint ckpt = Checkpoint.open(dir);
        try {
            CausalLM m = switch (spec.family()) {
                case QWEN3, QWEN3_MOE -> {
                    QuantFormat q = format.quantFormat();
                    var options = new Qwen3Model.LoadOptions(q == null ? null : w -> Weight.of(q.quantize(w)));
                    yield Qwen3Model.load(DecoderConfig.from(spec), ckpt, backend, options, groups);
                }
                case DEEPSEEK_V3 -> {
                    QuantFormat q = format.quantFormat();
                    var options = new Qwen3Model.LoadOptions(q == null ? null : w -> Weight.of(q.quantize(w)));
                    yield DeepseekV3Model.load(DeepseekV3Config.from(spec), spec.mla().ropeInterleave(),
                            spec.quantization(), ckpt, backend, options, groups);
                }
                case GPT_OSS -> {
                    // experts shipped in MXFP4 stay as stored; full-precision experts follow the format
                    QuantFormat q = format.quantFormat();
                    var options = new GptOssModel.LoadOptions(q == null ? null : w -> Weight.of(q.quantize(w)));
                    yield GptOssModel.load(GptOssConfig.from(spec), ckpt, backend, options);
                }
                case DEEPSEEK_V4 -> {
                    QuantFormat q = format.quantFormat();
                    yield DeepseekV4Model.load(spec, ckpt, backend, q == null ? null : w -> Weight.of(q.quantize(w)));
                }
                default -> throw new IllegalArgumentException(dir + ": model_type " + spec.modelType()
                        + " is recognised but its forward pass is not available in this build (supported: qwen3,"
                        + " qwen3_moe, gpt_oss, deepseek_v3, kimi_k2, kimi_k25, deepseek_v4)");
            };
            return new LoadedModel(dir, spec, ckpt, m);
        } catch (IllegalArgumentException e) {
            ckpt.close();
            // a missing, misshapen or wrongly typed tensor: named by the loader, placed here in the model's folder
            String msg = String.valueOf(e.getMessage());
            throw msg.contains(dir.toString()) ? e : new IllegalArgumentException(dir + ": " + msg, e);
        } catch (RuntimeException e) {
            ckpt.close();
            throw e;
        }
    }

    public Path dir() {
        return dir;
    }

    public ModelSpec spec() {
        return spec;
    }

    public CausalLM model() {
        return model;
    }

    /** The model's adapter targets (every architecture Orbit loads offers them). */
    public AdapterTargets targets() {
        return (AdapterTargets) model;
    }

    /** Loads a PEFT adapter directory (LoRA or OFT, by its {@code peft_type}) onto this model. */
    public Adapter loadAdapter(Path adapterDir) {
        AdapterConfig cfg = AdapterConfig.read(adapterDir);   // its errors name adapter_config.json
        Path weights = adapterDir.resolve("adapter_model.safetensors");
        try (Checkpoint a = Checkpoint.open(weights)) {
            return cfg.type().equals("OFT")
                    ? OftAdapter.load(cfg, a, targets(), model.backend().allocator())
                    : LoraAdapter.load(cfg, a, targets(), model.backend().allocator());
        } catch (IllegalArgumentException e) {   // the config and the weights (or the model) disagree: name both files
            if (e.getMessage() != null && e.getMessage().contains(adapterDir.toString())) {
                throw e;
            }
            throw new IllegalArgumentException("adapter " + adapterDir + " (adapter_config.json and "
                    + weights.getFileName() + "): " + e.getMessage(), e);
        }
    }

    @Override
    public void close() {
        model.close();
        checkpoint.close();
    }
}
