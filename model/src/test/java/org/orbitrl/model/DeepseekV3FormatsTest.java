package org.orbitrl.model;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.Fp8Block128;
import org.orbitrl.kernels.quant.Fp8Block128Ue8m0;
import org.orbitrl.kernels.quant.Int4G32;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DeepseekV3Model;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.checkpoint.SafetensorsWriter;
import org.orbitrl.model.nn.Weight;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The DeepSeek-V3 fixture re-exported in the checkpoint layouts of the real releases, loaded
 * through {@link LoadedModel}:
 * <ul>
 *   <li>{@code kimi_k2} / {@code kimi_k25}: compressed-tensors {@code pack-quantized} INT4 group-32
 *       routed experts ({@code weight_packed} i32 [out, in/8], {@code weight_scale} bf16 [out, in/32],
 *       {@code weight_shape} i32 [2]), everything in the real config's {@code ignore} list bf16; the
 *       {@code kimi_k25} wrapper keeps the text model under {@code language_model.};</li>
 *   <li>{@code deepseek_v3} {@code fp8}: every linear but {@code lm_head} and the router as E4M3
 *       {@code weight} with an f32 {@code weight_scale_inv} per 128x128 block, and the V3.1
 *       {@code scale_fmt: ue8m0} variant with power-of-two scales.</li>
 * </ul>
 * Each {@code quantization_config} is copied from the real model's config.json. The loaded
 * model's logits must equal, within 1e-4 absolute (f32 summation order only), those of a
 * plain-layout checkpoint holding the same quantized weights decoded by this test's own reading of
 * the format spec: the format path adds no error beyond the quantization itself. Against the
 * unquantized fixture reference: the logits must differ (something was quantized; on this random
 * model the rounding flips routing choices, so logits move by up to ~30% RMS and are not bounded
 * tighter); for Kimi, layer 0 (attention and dense MLP, in the {@code ignore} list) must still
 * match {@code hidden_states.1} within 1e-4; for FP8, where layer 0 is quantized, its relative RMS
 * error must stay below 0.1 (E4M3 rounding, about 2.5% RMS per weight, through about six matmuls).
 */
public class DeepseekV3FormatsTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Path FIXTURE = TestSafetensors.fixtures().resolve("deepseek_v3");

    @TempDir
    Path tmp;

    static Path models() {
        return Path.of(System.getProperty("orbit.models", "../../shared/models"));
    }

    /** The quantized export and its decoded twin, and how many weights were converted. */
    record Export(Path quantized, Path decoded, int converted) {
    }

    /**
     * Writes the fixture in {@code layout} into {@code dir}/quantized, and the same weights decoded
     * by this test into {@code dir}/decoded. {@code alsoPacked}: a module (without prefix) that is
     * packed although the ignore list keeps it bf16; {@code withQuantConfig} false leaves
     * {@code quantization_config} out.
     */
    static Export export(Path dir, String layout, String alsoPacked, boolean withQuantConfig) throws IOException {
        TestSafetensors src = new TestSafetensors(FIXTURE.resolve("model.safetensors"));
        Map<String, Tensor> quantized = new TreeMap<>();
        Map<String, Tensor> decoded = new TreeMap<>();
        ObjectNode config = (ObjectNode) JSON.readTree(FIXTURE.resolve("config.json").toFile());
        boolean kimi = layout.startsWith("kimi");
        String prefix = layout.equals("kimi_k25") ? "language_model." : "";
        int converted = 0;
        for (String name : src.names()) {
            Tensor t = src.get(name);
            String module = name.substring(0, name.length() - ".weight".length());
            if (kimi && (name.contains(".mlp.experts.") || module.equals(alsoPacked))) {
                QuantizedTensor q = Int4G32.INSTANCE.quantize(t);
                quantized.put(prefix + module + ".weight_packed", q.codes());
                quantized.put(prefix + module + ".weight_scale", q.scales());
                quantized.put(prefix + module + ".weight_shape", Tensor.ofInts(new int[]{t.size(0), t.size(1)}, 2));
                decoded.put(prefix + name, decodeInt4(q.codes(), q.scales(), t.size(0), t.size(1)));
                converted++;
            } else if (!kimi && name.endsWith("_proj.weight") && t.rank() == 2) {
                boolean ue8m0 = layout.equals("fp8_ue8m0");
                QuantFormat format = ue8m0 ? Fp8Block128Ue8m0.INSTANCE : Fp8Block128.INSTANCE;
                QuantizedTensor q = format.quantize(t);
                Tensor scaleInv = ue8m0 ? e8m0ToF32(q.scales()) : q.scales();
                quantized.put(name, q.codes());
                quantized.put(module + ".weight_scale_inv", scaleInv);
                decoded.put(name, decodeFp8(q.codes(), scaleInv));
                converted++;
            } else {
                quantized.put(prefix + name, t);
                decoded.put(prefix + name, t);
            }
        }
        JsonNode realQuant;
        if (kimi) {
            realQuant = JSON.readTree(models().resolve("kimi-k2.6/config.json").toFile()).get("text_config")
                    .get("quantization_config");
        } else {
            realQuant = JSON.readTree(models().resolve("deepseek-v3/config.json").toFile()).get("quantization_config").deepCopy();
            if (layout.equals("fp8_ue8m0")) {
                ((ObjectNode) realQuant).put("scale_fmt", "ue8m0");
            }
        }
        ObjectNode quantConfig = config.deepCopy();
        quantConfig.put("model_type", kimi ? "kimi_k2" : "deepseek_v3");
        if (withQuantConfig) {
            quantConfig.set("quantization_config", realQuant);
        }
        ObjectNode plainConfig = config.deepCopy();
        plainConfig.put("model_type", kimi ? "kimi_k2" : "deepseek_v3");
        if (layout.equals("kimi_k25")) {
            quantConfig = wrapKimiK25(quantConfig);
            plainConfig = wrapKimiK25(plainConfig);
        }
        return new Export(write(dir.resolve("quantized"), quantConfig, quantized), write(dir.resolve("decoded"), plainConfig,
                decoded), converted);
    }

    @ParameterizedTest
    @ValueSource(strings = {"kimi_k2", "kimi_k25", "fp8", "fp8_ue8m0"})
    void reExportedCheckpointMatchesItsDecodedWeights(String layout) throws IOException {
        Export ex = export(tmp, layout, null, true);
        boolean kimi = layout.startsWith("kimi");
        int converted = ex.converted();
        assertTrue(converted > 0, "some weights were converted");
        Path qDir = ex.quantized();
        Path dDir = ex.decoded();

        List<int[]> seqs = sequences();
        float[] q;
        float[] d;
        float[] qh1;
        try (LoadedModel m = LoadedModel.load(qDir, Backends.cpu(), BaseFormat.BF16)) {
            assertInstanceOf(DeepseekV3Model.class, m.model());
            float[][] h1 = new float[1][];
            q = logits(m.model(), seqs, h1);
            qh1 = h1[0];
            // the latent cache's absorbed form reads kv_b_proj as stored (fp8: dequantized once)
            List<CausalLM.Segment> cached = new ArrayList<>();
            for (int[] s : seqs) {
                cached.add(new CausalLM.Segment(s, m.model().newCache(s.length)));
            }
            Qwen3FixtureTest.assertClose(layout + " logits through the latent cache", q,
                    m.model().forward(cached).toFloatArray(), 1e-4f);
        }
        try (LoadedModel m = LoadedModel.load(dDir, Backends.cpu(), BaseFormat.BF16)) {
            d = logits(m.model(), seqs, new float[1][]);
        }
        Qwen3FixtureTest.assertClose(layout + " logits vs the same weights decoded by the spec", d, q, 1e-4f);
        assertTrue(maxAbsDiff(q, new TestSafetensors(FIXTURE.resolve("reference.safetensors")).get("logits").toFloatArray()) > 0,
                layout + ": logits equal the unquantized reference bit for bit, so nothing was quantized");
        float[] refH1 = new TestSafetensors(FIXTURE.resolve("reference.safetensors")).get("hidden_states.1").toFloatArray();
        if (kimi) {
            // layer 0 is attention and a dense MLP, all in the ignore list: untouched by quantization
            Qwen3FixtureTest.assertClose(layout + " hidden_states.1 (nothing quantized in layer 0)", refH1, qh1, 1e-4f);
        } else {
            double e2 = 0;
            double r2 = 0;
            for (int i = 0; i < refH1.length; i++) {
                e2 += (refH1[i] - qh1[i]) * (double) (refH1[i] - qh1[i]);
                r2 += refH1[i] * (double) refH1[i];
            }
            double rel = Math.sqrt(e2 / r2);
            System.out.printf("%s: %d weights converted; hidden_states.1 relative RMS error %.4g (bound 0.1)%n", layout,
                    converted, rel);
            // E4M3 rounds each weight by up to 2^-4 relative (about 2.5% RMS); layer 0 chains about six
            // quantized matmuls, so about 6% RMS is expected there
            assertTrue(rel > 1e-4 && rel < 0.1, layout + ": hidden_states.1 relative RMS error " + rel + " outside (1e-4, 0.1)");
        }
    }

    private static float maxAbsDiff(float[] a, float[] b) {
        float worst = 0;
        for (int i = 0; i < a.length; i++) {
            worst = Math.max(worst, Math.abs(a[i] - b[i]));
        }
        return worst;
    }

    /**
     * An fp8 checkpoint loaded with its experts quantized to INT4 (the base keeps routed experts in 4 bits): every routed
     * expert is INT4 g32 made from its FP8 values decoded, the other linears stay FP8, and the logits equal those of
     * the decoded checkpoint loaded the same way (its experts quantized from the same values) within 1e-4.
     */
    @ParameterizedTest
    @ValueSource(strings = {"fp8", "fp8_ue8m0"})
    void fp8ExpertsAreQuantizedOnLoadFromTheirDecodedValues(String layout) throws IOException {
        Export ex = export(tmp, layout, null, true);
        List<int[]> seqs = sequences();
        float[] q;
        float[] d;
        try (LoadedModel m = LoadedModel.load(ex.quantized(), Backends.cpu(), BaseFormat.INT4)) {
            int experts = 0;
            for (var set : m.targets().expertSets()) {
                for (var lin : set.gate()) {
                    assertTrue(lin.weight() instanceof Weight.Quantized w && w.w().format() == Int4G32.INSTANCE,
                            lin.name() + " is INT4 g32, got " + lin.weight());
                    experts++;
                }
            }
            assertTrue(experts > 0, "the model has routed experts");
            List<Weight> attention = m.targets().linearModules().entrySet().stream()
                    .filter(e -> e.getKey().contains("self_attn") && e.getKey().endsWith("_proj"))
                    .map(e -> e.getValue().weight()).toList();
            assertTrue(!attention.isEmpty() && attention.stream().allMatch(w -> w instanceof Weight.Quantized f
                            && (f.w().format() == Fp8Block128.INSTANCE || f.w().format() == Fp8Block128Ue8m0.INSTANCE)),
                    "the attention's " + attention.size() + " *_proj linears stay FP8");
            q = logits(m.model(), seqs, new float[1][]);
        }
        try (LoadedModel m = LoadedModel.load(ex.decoded(), Backends.cpu(), BaseFormat.INT4)) {
            d = logits(m.model(), seqs, new float[1][]);
        }
        Qwen3FixtureTest.assertClose(layout + " with INT4 experts vs the decoded checkpoint with INT4 experts", d, q, 1e-4f);
    }

    @Test
    void kimiCheckpointEqualsInt4QuantizationOnLoad() throws IOException {
        Export ex = export(tmp, "kimi_k2", null, true);
        List<int[]> seqs = sequences();
        float[] stored;
        float[] onLoad;
        try (LoadedModel m = LoadedModel.load(ex.quantized(), Backends.cpu(), BaseFormat.BF16)) {
            stored = logits(m.model(), seqs, new float[1][]);
        }
        try (LoadedModel m = LoadedModel.load(FIXTURE, Backends.cpu(), BaseFormat.INT4)) {
            for (var set : m.targets().expertSets()) {
                for (var lin : set.gate()) {
                    assertInstanceOf(Weight.Quantized.class, lin.weight(), lin.name());
                }
            }
            for (var lin : m.targets().linearModules().values()) {
                assertInstanceOf(Weight.Dense.class, lin.weight(), lin.name() + " stays as stored");
            }
            onLoad = logits(m.model(), seqs, new float[1][]);
        }
        // the same INT4 group-32 codes and scales, held once from the checkpoint and once quantized on load
        Qwen3FixtureTest.assertClose("INT4 checkpoint vs INT4 on load", stored, onLoad, 0f);
    }

    @Test
    void layoutsThatContradictTheQuantizationConfigAreRefused() throws IOException {
        Export packedAttention = export(tmp.resolve("a"), "kimi_k2", "model.layers.0.self_attn.o_proj", true);
        var e = assertThrows(IllegalArgumentException.class,
                () -> LoadedModel.load(packedAttention.quantized(), Backends.cpu(), BaseFormat.BF16));
        assertTrue(e.getMessage().contains("model.layers.0.self_attn.o_proj") && e.getMessage().contains("ignore"),
                e.getMessage());
        Export noConfig = export(tmp.resolve("b"), "fp8", null, false);
        e = assertThrows(IllegalArgumentException.class,
                () -> LoadedModel.load(noConfig.quantized(), Backends.cpu(), BaseFormat.BF16));
        assertTrue(e.getMessage().contains("weight_scale_inv") && e.getMessage().contains("fp8"), e.getMessage());
        Export kimiNoConfig = export(tmp.resolve("c"), "kimi_k2", null, false);
        e = assertThrows(IllegalArgumentException.class,
                () -> LoadedModel.load(kimiNoConfig.quantized(), Backends.cpu(), BaseFormat.BF16));
        assertTrue(e.getMessage().contains("weight_packed") || e.getMessage().contains("pack-quantized"), e.getMessage());
    }

    /** The {@code kimi_k25} wrapper: the text model's config goes under {@code text_config}. */
    private static ObjectNode wrapKimiK25(ObjectNode text) {
        ObjectNode outer = JSON.createObjectNode();
        outer.putArray("architectures").add("KimiK25ForConditionalGeneration");
        outer.put("model_type", "kimi_k25");
        outer.set("text_config", text);
        return outer;
    }

    static Path write(Path dir, ObjectNode config, Map<String, Tensor> tensors) throws IOException {
        Files.createDirectories(dir);
        JSON.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("config.json").toFile(), config);
        new SafetensorsWriter().metadata("format", "pt").addAll(tensors).write(dir.resolve("model.safetensors"));
        return dir;
    }

    static List<int[]> sequences() {
        return org.orbitrl.model.arch.FixtureRuns.inputRows(new TestSafetensors(FIXTURE.resolve("reference.safetensors")));
    }

    /** Logits of the sequences (no cache); {@code hidden1[0]} receives the hidden state after layer 0. */
    static float[] logits(CausalLM model, List<int[]> seqs, float[][] hidden1) {
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] s : seqs) {
            batch.add(new CausalLM.Segment(s, null));
        }
        return model.forward(batch, (i, h) -> {
            if (i == 1) {
                hidden1[0] = h.toFloatArray();
            }
        }).toFloatArray();
    }

    /**
     * compressed-tensors {@code pack_to_int32}, read back: word c/8 of a row holds element c in bits
     * 4·(c%8) .. 4·(c%8)+3 as {@code value + 8}; times the bf16 scale of group c/32.
     */
    static Tensor decodeInt4(Tensor packed, Tensor scale, int rows, int cols) {
        Tensor out = Tensor.allocate(Arena.ofAuto(), DType.F32, rows, cols);
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                int word = (int) packed.getLong(r, c / 8);
                int v = ((word >>> (4 * (c % 8))) & 0xF) - 8;
                out.setFloat(v * scale.getFloat(r, c / 32), r, c);
            }
        }
        return out;
    }

    /** E4M3 (fn): sign bit 7, exponent bits 6..3 with bias 7, mantissa bits 2..0; times the block's scale. */
    static Tensor decodeFp8(Tensor codes, Tensor scaleInv) {
        int rows = codes.size(0);
        int cols = codes.size(1);
        Tensor out = Tensor.allocate(Arena.ofAuto(), DType.F32, rows, cols);
        byte[] raw = codes.contiguous().segment().asSlice(codes.byteOffset(), (long) rows * cols)
                .toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                int b = raw[r * cols + c] & 0xFF;
                int e = (b >> 3) & 0xF;
                int m = b & 7;
                double mag = e == 0 ? m / 8.0 * Math.pow(2, -6) : (1 + m / 8.0) * Math.pow(2, e - 7);
                if ((b & 0x7F) == 0x7F) {
                    throw new IllegalStateException("NaN code at [" + r + ", " + c + "]");
                }
                float v = (float) ((b & 0x80) != 0 ? -mag : mag);
                out.setFloat(v * scaleInv.getFloat(r / 128, c / 128), r, c);
            }
        }
        return out;
    }

    /** UE8M0 scale bytes as the f32 powers of two DeepSeek V3.1 stores in {@code weight_scale_inv}. */
    static Tensor e8m0ToF32(Tensor bytes) {
        Tensor out = Tensor.allocate(Arena.ofAuto(), DType.F32, bytes.shape());
        for (int i = 0; i < bytes.size(0); i++) {
            for (int j = 0; j < bytes.size(1); j++) {
                out.setFloat((float) Math.pow(2, (int) bytes.getLong(i, j) - 127), i, j);
            }
        }
        return out;
    }
}
