package org.orbitrl.model;

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
import org.orbitrl.kernels.quant.Int4G32;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.arch.FixtureRuns;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.nn.Weight;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The Qwen3-MoE fixture re-exported as Qwen's fine-grained fp8 releases ship it (Qwen3-30B-A3B-FP8 and its siblings):
 * every projection, the experts' too, E4M3 {@code weight} with a {@code weight_scale_inv} per 128×128 block (f32, or
 * bf16 as later releases store it), the router, norms, embedding and head bf16, and {@code quantization_config}
 * {@code fp8}/{@code e4m3}/[128, 128]. Loaded as stored, every projection is FP8 and the logits equal, within 1e-4
 * absolute (f32 summation order only), those of a plain checkpoint holding the same values decoded here by the E4M3
 * definition; loaded with INT4 experts, the experts are INT4 g32 made from their decoded values and the logits equal
 * those of the decoded checkpoint loaded the same way. A scale missing is refused naming the module.
 */
class Qwen3Fp8CheckpointTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Path FIXTURE = TestSafetensors.fixtures().resolve("qwen3_moe");

    @TempDir
    Path tmp;

    /** Writes quantized/ and decoded/ under tmp; scales stored f32 or bf16. */
    static Path[] export(Path tmp, boolean bf16Scales, String dropScaleOf) throws IOException {
        TestSafetensors src = new TestSafetensors(FIXTURE.resolve("model.safetensors"));
        Map<String, Tensor> quantized = new TreeMap<>();
        Map<String, Tensor> decoded = new TreeMap<>();
        int converted = 0;
        for (String name : src.names()) {
            Tensor t = src.get(name);
            if (name.endsWith("_proj.weight") && t.rank() == 2) {
                String module = name.substring(0, name.length() - ".weight".length());
                QuantizedTensor q = Fp8Block128.INSTANCE.quantize(Tensor.of(t.toFloatArray(), t.shape()));
                Tensor scales = bf16Scales ? q.scales().to(DType.BF16) : q.scales();
                quantized.put(name, q.codes());
                if (!module.equals(dropScaleOf)) {
                    quantized.put(module + ".weight_scale_inv", scales);
                }
                decoded.put(name, DeepseekV3FormatsTest.decodeFp8(q.codes(), scales.to(DType.F32)));
                converted++;
            } else {
                quantized.put(name, t);
                decoded.put(name, t);
            }
        }
        assertTrue(converted > 0, "projections were converted");
        ObjectNode config = (ObjectNode) JSON.readTree(FIXTURE.resolve("config.json").toFile());
        ObjectNode plain = config.deepCopy();
        ObjectNode quant = config.putObject("quantization_config");
        quant.put("quant_method", "fp8");
        quant.put("fmt", "e4m3");
        quant.put("activation_scheme", "dynamic");
        quant.putArray("weight_block_size").add(128).add(128);
        return new Path[]{DeepseekV3FormatsTest.write(tmp.resolve("quantized"), config, quantized),
                DeepseekV3FormatsTest.write(tmp.resolve("decoded"), plain, decoded)};
    }

    static List<int[]> sequences() {
        return FixtureRuns.inputRows(new TestSafetensors(FIXTURE.resolve("reference.safetensors")));
    }

    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void fp8CheckpointMatchesItsDecodedValues(boolean bf16Scales) throws IOException {
        Path[] dirs = export(tmp, bf16Scales, null);
        String what = "qwen3_moe fp8 (" + (bf16Scales ? "bf16" : "f32") + " scales)";
        float[] q;
        float[] d;
        try (LoadedModel m = LoadedModel.load(dirs[0], Backends.cpu(), BaseFormat.BF16)) {
            long fp8 = m.targets().linearModules().values().stream().filter(l -> l.weight() instanceof Weight.Quantized w
                    && w.w().format() == Fp8Block128.INSTANCE).count();
            assertTrue(fp8 >= 4 * 2, what + ": the attention's projections are FP8, " + fp8 + " found");
            for (var set : m.targets().expertSets()) {
                for (var lin : set.gate()) {
                    assertTrue(lin.weight() instanceof Weight.Quantized w && w.w().format() == Fp8Block128.INSTANCE,
                            lin.name() + " is FP8 as stored");
                }
            }
            q = DeepseekV3FormatsTest.logits(m.model(), sequences(), new float[1][]);
        }
        try (LoadedModel m = LoadedModel.load(dirs[1], Backends.cpu(), BaseFormat.BF16)) {
            d = DeepseekV3FormatsTest.logits(m.model(), sequences(), new float[1][]);
        }
        Qwen3FixtureTest.assertClose(what + " vs its decoded values", d, q, 1e-4f);
        try (LoadedModel m = LoadedModel.load(dirs[0], Backends.cpu(), BaseFormat.INT4)) {
            int experts = 0;
            for (var set : m.targets().expertSets()) {
                for (var lin : set.gate()) {
                    assertTrue(lin.weight() instanceof Weight.Quantized w && w.w().format() == Int4G32.INSTANCE,
                            lin.name() + " is INT4 g32 from its decoded values");
                    experts++;
                }
            }
            assertTrue(experts > 0, "routed experts");
            q = DeepseekV3FormatsTest.logits(m.model(), sequences(), new float[1][]);
        }
        try (LoadedModel m = LoadedModel.load(dirs[1], Backends.cpu(), BaseFormat.INT4)) {
            d = DeepseekV3FormatsTest.logits(m.model(), sequences(), new float[1][]);
        }
        Qwen3FixtureTest.assertClose(what + " with INT4 experts vs its decoded values with INT4 experts", d, q, 1e-4f);
    }

    /**
     * A backend whose expert kernels do not take FP8 (the CUDA backend's) refuses the checkpoint kept as stored before
     * reading a weight, naming the directory and the base formats that load it; with INT4 experts it loads.
     */
    @Test
    void aBackendWithoutFp8ExpertsIsToldWhichBaseFormatsLoadThem() throws IOException {
        Path[] dirs = export(tmp, false, null);
        org.orbitrl.kernels.Backend cpu = Backends.cpu();
        org.orbitrl.kernels.Backend noFp8Experts = (org.orbitrl.kernels.Backend) java.lang.reflect.Proxy.newProxyInstance(
                org.orbitrl.kernels.Backend.class.getClassLoader(), new Class<?>[]{org.orbitrl.kernels.Backend.class},
                (proxy, method, args) -> {
                    if (method.getName().equals("runsExpertsIn")) {
                        return ((org.orbitrl.kernels.quant.QuantFormat) args[0]).name().startsWith("int4");
                    }
                    try {
                        return method.invoke(cpu, args);
                    } catch (java.lang.reflect.InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoadedModel.load(dirs[0], noFp8Experts, BaseFormat.BF16).close());
        assertTrue(e.getMessage().contains(dirs[0].toString()) && e.getMessage().contains("FP8")
                && e.getMessage().contains("int4"), e.getMessage());
        try (LoadedModel m = LoadedModel.load(dirs[0], noFp8Experts, BaseFormat.INT4)) {
            assertTrue(m.targets().expertSets().size() > 0, "loads with INT4 experts");
        }
    }

    @Test
    void anFp8WeightWithoutItsScaleIsRefusedNamingIt() throws IOException {
        String module = "model.layers.1.self_attn.o_proj";
        Path[] dirs = export(tmp, false, module);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> LoadedModel.load(dirs[0], Backends.cpu(), BaseFormat.BF16).close());
        assertTrue(e.getMessage().contains(module + ".weight_scale_inv"), e.getMessage());
    }
}
