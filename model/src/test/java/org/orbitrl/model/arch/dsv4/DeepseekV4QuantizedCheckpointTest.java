package org.orbitrl.model.arch.dsv4;

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
import org.orbitrl.kernels.quant.Mxfp4;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.checkpoint.Checkpoint;
import org.orbitrl.model.checkpoint.SafetensorsWriter;
import org.orbitrl.model.spec.ConfigLoader;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The fixture re-exported in the layout of the released DeepSeek V4 checkpoints: routed experts
 * FP4 ({@code w1.weight} I8 [out, in/2] low nibble first, {@code w1.scale} F8_E8M0 [out, in/32]),
 * the attention and shared-expert linears FP8 E4M3 with 128×128 block scales (E8M0 {@code .scale}
 * for {@code scale_fmt: ue8m0}, or f32 {@code weight_scale_inv}), the compressor / indexer key
 * projections, router, norms and hyper-connection tensors left in bf16, and the
 * {@code quantization_config} / {@code expert_dtype} of {@code models/deepseek-v4-flash}.
 *
 * <p>Derived error: every stored value decodes exactly in f32 (E2M1·2^k, E4M3·2^k or E4M3·f32
 * scale), so the quantized model must compute the same function as a dense model holding the
 * decoded weights; only f32 summation order differs, hence the fixtures' 1e-4 absolute bound on
 * the logits. The dense reference is decoded here, independently of the kernels' formats, from
 * the written bytes by the E2M1 / E4M3 / E8M0 definitions. The distance to the bf16 model (the
 * quantization error itself) is printed, not asserted.
 */
public class DeepseekV4QuantizedCheckpointTest {

    private static final float[] E2M1 = {0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f};

    static float e4m3(int b) {
        int s = (b >> 7) & 1;
        int e = (b >> 3) & 0xF;
        int m = b & 7;
        if (e == 0xF && m == 7) {
            return Float.NaN;
        }
        float v = e == 0 ? m / 8f * 0x1p-6f : (1 + m / 8f) * (float) Math.pow(2, e - 7);
        return s == 1 ? -v : v;
    }

    static float e8m0(int b) {
        return (float) Math.pow(2, (b & 0xFF) - 127);
    }

    private static boolean isExpert(String n) {
        return n.contains(".ffn.experts.") && n.endsWith(".weight");
    }

    private static boolean isFp8(String n) {
        return n.endsWith(".weight") && (n.contains(".attn.wq_a.") || n.contains(".attn.wq_b.") || n.contains(".attn.wkv.")
                || n.contains(".attn.wo_a.") || n.contains(".attn.wo_b.") || n.contains(".attn.indexer.wq_b.")
                || n.contains(".ffn.shared_experts."));
    }

    private static Tensor bytesAs(Tensor t, DType d, long... shape) {
        Tensor c = t.contiguous();
        return Tensor.wrap(c.segment().asSlice(c.byteOffset(), c.byteSize()), d, shape);
    }

    /**
     * {@code LoadedModel} with {@code BaseFormat.MXFP4} quantizes the bf16 experts on load; that model
     * must equal the dense model whose experts hold the decoded MXFP4 values (same 1e-4 bound).
     */
    @Test
    void quantizeOnLoadMatchesTheDecodedExperts(@TempDir Path tmp) throws IOException {
        Path fx = DeepseekV4FixtureTest.dir();
        var ref = new TestSafetensors(fx.resolve("reference.safetensors"));
        Path dDir = export("experts-only", tmp).resolve("dense");
        float[] dense = logits(dDir, ref);
        try (var lm = org.orbitrl.model.LoadedModel.load(fx, Backends.cpu(), org.orbitrl.model.BaseFormat.MXFP4)) {
            int quantized = 0;
            for (var set : lm.targets().expertSets()) {
                for (var lin : set.gate()) {
                    assertTrue(lin.weight() instanceof org.orbitrl.model.nn.Weight.Quantized q
                            && q.w().format() == Mxfp4.INSTANCE, lin.name() + " is quantized to MXFP4 on load");
                    quantized++;
                }
            }
            assertTrue(quantized == 4 * 8, "every routed expert was quantized: " + quantized);
            List<CausalLM.Segment> batch = new ArrayList<>();
            for (int[] r : DeepseekV4FixtureTest.rows(ref.get("input_ids"))) {
                batch.add(new CausalLM.Segment(r, null));
            }
            Qwen3FixtureTest.assertClose("deepseek_v4 experts quantized on load vs decoded dense", dense,
                    lm.model().forward(batch).toFloatArray(), 1e-4f);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"ue8m0", "f32"})
    void releasedLayoutLoadsAndMatchesTheDecodedDenseModel(String scaleFmt, @TempDir Path tmp) throws IOException {
        Path fx = DeepseekV4FixtureTest.dir();
        Path out = export(scaleFmt, tmp);
        var ref = new TestSafetensors(fx.resolve("reference.safetensors"));
        float[] qLogits = logits(out.resolve("quantized"), ref);
        float[] dLogits = logits(out.resolve("dense"), ref);
        Qwen3FixtureTest.assertClose("deepseek_v4 " + scaleFmt + " FP8 + FP4 experts vs decoded dense", dLogits, qLogits, 1e-4f);
        float[] bf16 = ref.get("logits").toFloatArray();
        double worst = 0;
        for (int i = 0; i < bf16.length; i++) {
            worst = Math.max(worst, Math.abs(bf16[i] - qLogits[i]));
        }
        System.out.printf("deepseek_v4 %s: quantization moves logits by at most %.4f from the bf16 model%n", scaleFmt, worst);
    }

    /**
     * Writes {@code quantized/} (the released layout; for {@code experts-only}, FP4 experts and
     * nothing else) and {@code dense/} (the decoded values as f32) under {@code tmp}.
     */
    static Path export(String scaleFmt, Path tmp) throws IOException {
        Path fx = DeepseekV4FixtureTest.dir();
        var src = new TestSafetensors(fx.resolve("model.safetensors"));
        SafetensorsWriter quant = new SafetensorsWriter();
        SafetensorsWriter dense = new SafetensorsWriter();
        List<String> relabel = new ArrayList<>();
        int fp4 = 0;
        int fp8 = 0;
        for (String n : new java.util.TreeSet<>(src.names())) {
            Tensor t = src.get(n);
            boolean fp8Here = isFp8(n) && !scaleFmt.equals("experts-only");
            if (isExpert(n) || fp8Here) {
                String module = n.substring(0, n.length() - ".weight".length());
                Tensor w = Tensor.of(t.toFloatArray(), t.shape());
                int rows = t.size(0);
                int cols = t.size(1);
                float[] decoded = new float[rows * cols];
                if (isExpert(n)) {
                    QuantizedTensor q = Mxfp4.INSTANCE.quantize(w);
                    byte[] codes = bytes(q.codes());
                    byte[] scales = bytes(q.scales());
                    for (int r = 0; r < rows; r++) {
                        for (int c = 0; c < cols; c++) {
                            int b = codes[r * cols / 2 + c / 2] & 0xFF;
                            int nib = c % 2 == 0 ? b & 0xF : b >> 4;
                            float v = E2M1[nib & 7] * ((nib & 8) != 0 ? -1 : 1);
                            decoded[r * cols + c] = v * e8m0(scales[r * (cols / 32) + c / 32]);
                        }
                    }
                    quant.add(n, bytesAs(q.codes(), DType.I8, rows, cols / 2));
                    quant.add(module + ".scale", bytesAs(q.scales(), DType.U8, rows, cols / 32));
                    relabel.add(module + ".scale");
                    fp4++;
                } else {
                    boolean e8 = scaleFmt.equals("ue8m0");
                    QuantizedTensor q = e8 ? Fp8Block128Ue8m0.INSTANCE.quantize(w) : Fp8Block128.INSTANCE.quantize(w);
                    byte[] codes = bytes(q.codes());
                    float[] s = e8 ? null : q.scales().toFloatArray();
                    byte[] sb = e8 ? bytes(q.scales()) : null;
                    int gc = (cols + 127) / 128;
                    for (int r = 0; r < rows; r++) {
                        for (int c = 0; c < cols; c++) {
                            int g = (r / 128) * gc + c / 128;
                            decoded[r * cols + c] = e4m3(codes[r * cols + c] & 0xFF) * (e8 ? e8m0(sb[g]) : s[g]);
                        }
                    }
                    quant.add(n, q.codes());
                    if (e8) {
                        quant.add(module + ".scale", q.scales());
                        relabel.add(module + ".scale");
                    } else {
                        quant.add(module + ".weight_scale_inv", q.scales());
                    }
                    fp8++;
                }
                dense.add(n, Tensor.of(decoded, rows, cols));
            } else {
                quant.add(n, t);
                dense.add(n, t);
            }
        }
        assertTrue(fp4 == 4 * 8 * 3 && (fp8 > 0 || scaleFmt.equals("experts-only")),
                "experts and linears were quantized: " + fp4 + " FP4, " + fp8 + " FP8");
        Path qDir = Files.createDirectories(tmp.resolve("quantized"));
        Path dDir = Files.createDirectories(tmp.resolve("dense"));
        quant.write(qDir.resolve("model.safetensors"));
        relabelDtype(qDir.resolve("model.safetensors"), relabel, "F8_E8M0");
        dense.write(dDir.resolve("model.safetensors"));
        ObjectMapper json = new ObjectMapper();
        ObjectNode cfg = (ObjectNode) json.readTree(fx.resolve("config.json").toFile());
        Files.writeString(dDir.resolve("config.json"), json.writeValueAsString(cfg));
        ObjectNode flash = (ObjectNode) json.readTree(Path.of(System.getProperty("orbit.models",
                "../../shared/models")).resolve("deepseek-v4-flash/config.json").toFile());
        cfg.set("quantization_config", flash.get("quantization_config").deepCopy());
        cfg.set("expert_dtype", flash.get("expert_dtype").deepCopy());
        if (!scaleFmt.equals("ue8m0")) {
            ((ObjectNode) cfg.get("quantization_config")).remove("scale_fmt");
        }
        Files.writeString(qDir.resolve("config.json"), json.writeValueAsString(cfg));
        return tmp;
    }

    private static float[] logits(Path dir, TestSafetensors ref) {
        return logits(dir, ref, Backends.cpu());
    }

    /** The fixture's input rows through the checkpoint in {@code dir} on {@code backend}; the logits on the host. */
    static float[] logits(Path dir, TestSafetensors ref, org.orbitrl.kernels.Backend backend) {
        try (Checkpoint ck = Checkpoint.open(dir)) {
            DeepseekV4Model m = DeepseekV4Model.load(ConfigLoader.load(dir), ck, backend);
            List<CausalLM.Segment> batch = new ArrayList<>();
            for (int[] r : DeepseekV4FixtureTest.rows(ref.get("input_ids"))) {
                batch.add(new CausalLM.Segment(r, null));
            }
            return backend.allocator().toFloats(m.forward(batch));
        }
    }

    private static byte[] bytes(Tensor t) {
        Tensor c = t.contiguous();
        return c.segment().asSlice(c.byteOffset(), c.byteSize()).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
    }

    /** Rewrites the safetensors header so the named tensors carry {@code dtype} (same element width). */
    private static void relabelDtype(Path file, List<String> names, String dtype) throws IOException {
        byte[] all = Files.readAllBytes(file);
        long n = ByteBuffer.wrap(all, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        ObjectMapper json = new ObjectMapper();
        ObjectNode header = (ObjectNode) json.readTree(new String(all, 8, (int) n, StandardCharsets.UTF_8));
        for (String name : names) {
            ((ObjectNode) header.get(name)).put("dtype", dtype);
        }
        byte[] h = json.writeValueAsBytes(header);
        int padded = (h.length + 7) / 8 * 8;
        byte[] out = new byte[8 + padded + all.length - 8 - (int) n];
        ByteBuffer.wrap(out, 0, 8).order(ByteOrder.LITTLE_ENDIAN).putLong(padded);
        System.arraycopy(h, 0, out, 8, h.length);
        for (int i = h.length; i < padded; i++) {
            out[8 + i] = ' ';
        }
        System.arraycopy(all, 8 + (int) n, out, 8 + padded, all.length - 8 - (int) n);
        Files.write(file, out);
    }
}
