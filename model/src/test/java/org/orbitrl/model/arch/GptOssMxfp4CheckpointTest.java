package org.orbitrl.model.arch;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.Mxfp4;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.checkpoint.SafetensorsWriter;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.orbitrl.model.arch.Qwen3FixtureTest.assertClose;

/**
 * The gpt-oss fixture re-exported as the real checkpoints ship it: experts as MXFP4
 * {@code gate_up_proj_blocks} u8 [E, 2I, H/32, 16], {@code gate_up_proj_scales} u8 [E, 2I, H/32],
 * {@code down_proj_blocks} u8 [E, H, I/32, 16], {@code down_proj_scales} u8 [E, H, I/32], bf16
 * biases, and the {@code quantization_config} of gpt-oss-20b ({@code mxfp4}, attention, router,
 * embeddings and head in {@code modules_to_not_convert}). Loaded through {@link LoadedModel}, the
 * experts are the stored bytes (no re-quantization) and the logits equal, within 1e-4 absolute,
 * those of the full-precision path run on the same weights dequantized by an independent decoder
 * written here: both compute the same function on identical f32 weight values (MXFP4 dequantization
 * is exact in f32), so they differ only by f32 summation order, ~1e-6 at these sizes.
 */
class GptOssMxfp4CheckpointTest {
    private static final float[] E2M1 = {0f, .5f, 1f, 1.5f, 2f, 3f, 4f, 6f};
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path tmp;
    static Path mxfp4Dir;
    static Path dequantDir;
    static Map<String, Tensor> written = new TreeMap<>();

    @BeforeAll
    static void export() throws IOException {
        Path src = TestSafetensors.fixtures().resolve("gpt_oss");
        var fixture = new TestSafetensors(src.resolve("model.safetensors"));
        GptOssConfig c = GptOssFixtureTest.config();
        int e = c.experts();
        int h = c.hidden();
        int inter = c.intermediate();
        Map<String, Tensor> quant = new TreeMap<>();
        Map<String, Tensor> dequant = new TreeMap<>();
        for (String name : fixture.names()) {
            if (name.endsWith(".mlp.experts.gate_up_proj") || name.endsWith(".mlp.experts.down_proj")) {
                boolean gu = name.endsWith("gate_up_proj");
                int out = gu ? 2 * inter : h;
                int in = gu ? h : inter;
                Tensor w = fixture.get(name); // [E, in, out] as transformers stores it
                Tensor blocks = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.U8, e, out, in / 32, 16);
                Tensor scales = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.U8, e, out, in / 32);
                Tensor deq = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, e, in, out);
                for (int x = 0; x < e; x++) {
                    QuantizedTensor q = Mxfp4.INSTANCE.quantize(w.select(0, x).transpose(0, 1).to(DType.F32));
                    blocks.select(0, x).copyFrom(q.codes());
                    scales.select(0, x).copyFrom(q.scales());
                    deq.select(0, x).copyFrom(decode(q.codes(), q.scales(), out, in).transpose(0, 1));
                }
                quant.put(name + "_blocks", blocks);
                quant.put(name + "_scales", scales);
                dequant.put(name, deq);
            } else {
                quant.put(name, fixture.get(name));
                dequant.put(name, fixture.get(name));
            }
        }
        written = quant;
        mxfp4Dir = write("mxfp4", quant, true);
        dequantDir = write("dequantized", dequant, false);
    }

    /** An independent MXFP4 decoder: byte k of a block holds value 2k (low nibble) and 2k+1 (high). */
    static Tensor decode(Tensor blocks, Tensor scales, int rows, int cols) {
        float[] out = new float[rows * cols]; // [rows, cols]
        long[] b = blocks.toLongArray();
        long[] s = scales.toLongArray();
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                int g = c / 32;
                int k = (c % 32) / 2;
                int nib = (int) (b[(r * (cols / 32) + g) * 16 + k] >> (c % 2 == 0 ? 0 : 4)) & 15;
                float v = E2M1[nib & 7] * (float) Math.pow(2, s[r * (cols / 32) + g] - 127);
                out[r * cols + c] = (nib & 8) != 0 ? -v : v;
            }
        }
        return Tensor.of(out, rows, cols);
    }

    static Path write(String name, Map<String, Tensor> tensors, boolean mxfp4) throws IOException {
        Path dir = Files.createDirectories(tmp.resolve(name));
        new SafetensorsWriter().metadata("format", "pt").addAll(tensors).write(dir.resolve("model.safetensors"));
        ObjectNode cfg = (ObjectNode) JSON.readTree(TestSafetensors.fixtures().resolve("gpt_oss/config.json").toFile());
        if (mxfp4) {
            ObjectNode q = cfg.putObject("quantization_config");
            q.putArray("modules_to_not_convert").add("model.layers.*.self_attn").add("model.layers.*.mlp.router")
                    .add("model.embed_tokens").add("lm_head");
            q.put("quant_method", "mxfp4");
        }
        JSON.writeValue(dir.resolve("config.json").toFile(), cfg);
        return dir;
    }

    static float[] logits(LoadedModel m, List<int[]> rows) {
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] r : rows) {
            batch.add(new CausalLM.Segment(r, null));
        }
        return m.model().forward(batch).toFloatArray();
    }

    @Test
    void shippedMxfp4ExpertsLoadAsStoredAndMatchTheDequantizedPath() {
        var ref = new TestSafetensors(TestSafetensors.fixtures().resolve("gpt_oss/reference.safetensors"));
        List<int[]> rows = GptOssFixtureTest.inputRows(ref);
        try (LoadedModel q = LoadedModel.load(mxfp4Dir, Backends.cpu(), BaseFormat.BF16);
             LoadedModel f = LoadedModel.load(dequantDir, Backends.cpu(), BaseFormat.BF16)) {
            int sets = 0;
            for (AdapterTargets.ExpertSet set : q.targets().expertSets()) {
                String layer = set.module();
                assertTrue(set.fusedGateUp(), layer + " keeps gate_up fused");
                for (int x = 0; x < set.experts(); x++) {
                    checkStored(set.gate().get(x), written.get(layer + ".gate_up_proj_blocks").select(0, x),
                            written.get(layer + ".gate_up_proj_scales").select(0, x));
                    checkStored(set.down().get(x), written.get(layer + ".down_proj_blocks").select(0, x),
                            written.get(layer + ".down_proj_scales").select(0, x));
                }
                sets++;
            }
            assertEquals(2, sets);
            for (Linear l : f.targets().expertSets().get(0).gate()) {
                assertTrue(l.weight() instanceof Weight.Dense, "the dequantized checkpoint loads dense experts");
            }
            float[] lq = logits(q, rows);
            float[] lf = logits(f, rows);
            assertClose("mxfp4 vs dequantized f32 logits", lf, lq, 1e-4f);
            System.out.printf("gpt_oss mxfp4 logits: worst |mxfp4 - dequantized f32| %.3g, |mxfp4 - bf16 reference| %.3g%n",
                    GptOssFixtureTest.maxAbsDiff(lf, lq), GptOssFixtureTest.maxAbsDiff(ref.get("logits").toFloatArray(), lq));
            // quantization moved the logits away from the bf16 reference: the comparison above is not vacuous
            float[] lb = ref.get("logits").toFloatArray();
            float moved = 0;
            for (int i = 0; i < lb.length; i++) {
                moved = Math.max(moved, Math.abs(lb[i] - lq[i]));
            }
            assertTrue(moved > 1e-3f, "MXFP4 logits differ from bf16 by " + moved);
        }
    }

    private static void checkStored(Linear l, Tensor blocks, Tensor scales) {
        assertTrue(l.weight() instanceof Weight.Quantized, l.name() + " is quantized");
        QuantizedTensor q = ((Weight.Quantized) l.weight()).w();
        assertEquals(Mxfp4.INSTANCE, q.format(), l.name() + " format");
        assertArrayEquals(blocks.toLongArray(), q.codes().toLongArray(), l.name() + " codes are the stored bytes");
        assertArrayEquals(scales.toLongArray(), q.scales().toLongArray(), l.name() + " scales are the stored bytes");
        assertTrue(l.bias() != null, l.name() + " has its bias");
    }

    @Test
    void blocksWithoutAnMxfp4ConfigAndTheReverseAreNamedErrors() throws IOException {
        Path noConfig = write("blocks-without-config", written, false);
        var e1 = assertThrows(IllegalArgumentException.class,
                () -> LoadedModel.load(noConfig, Backends.cpu(), BaseFormat.BF16));
        assertTrue(e1.getMessage().contains("model.layers.0.mlp.experts") && e1.getMessage().contains("mxfp4"),
                e1.getMessage());
        Map<String, Tensor> bf16 = new TreeMap<>();
        var fixture = new TestSafetensors(TestSafetensors.fixtures().resolve("gpt_oss/model.safetensors"));
        fixture.names().forEach(n -> bf16.put(n, fixture.get(n)));
        Path noBlocks = write("config-without-blocks", bf16, true);
        var e2 = assertThrows(IllegalArgumentException.class,
                () -> LoadedModel.load(noBlocks, Backends.cpu(), BaseFormat.BF16));
        assertTrue(e2.getMessage().contains("model.layers.0.mlp.experts") && e2.getMessage().contains("modules_to_not_convert"),
                e2.getMessage());
    }
}
