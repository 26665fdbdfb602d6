package org.orbitrl.model;

import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.nn.Weight;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * A DeepSeek-V3 fp8 checkpoint ({@link DeepseekV3FormatsTest#export}: every projection FP8 E4M3 with 128×128 block
 * scales, f32 as V3 or E8M0 as V3.1) on the CUDA backend, its routed experts quantized to INT4 g32 on load from their
 * decoded values, the other FP8 linears held FP8 in device memory and dequantized there: the logits against the CPU
 * backend's for the same load, within 1e-4 in exact mode and 6e-2 with the default kernels (their bf16 rows, the bound
 * of {@code CudaArchFixtureTest} for this fixture). Skipped, with the reason, where no CUDA device is present.
 */
class CudaFp8CheckpointTest {
    @RegisterExtension
    static final CudaBackendPair GPU = new CudaBackendPair();

    @TempDir
    Path tmp;

    @ParameterizedTest
    @ValueSource(strings = {"fp8", "fp8_ue8m0"})
    void deepseekV3Fp8CheckpointOnTheDeviceMatchesTheHost(String layout) throws IOException {
        DeepseekV3FormatsTest.Export ex = DeepseekV3FormatsTest.export(tmp, layout, null, true);
        List<int[]> seqs = DeepseekV3FormatsTest.sequences();
        float[] want;
        try (LoadedModel m = LoadedModel.load(ex.quantized(), Backends.cpu(), BaseFormat.INT4)) {
            want = DeepseekV3FormatsTest.logits(m.model(), seqs, new float[1][]);
        }
        for (CudaBackend gpu : new CudaBackend[]{GPU.exact(), GPU.fast()}) {
            try (LoadedModel m = LoadedModel.load(ex.quantized(), gpu, BaseFormat.INT4)) {
                assertTrue(m.targets().linearModules().values().stream().anyMatch(l -> l.weight() instanceof Weight.Quantized q
                        && q.w().format().name().startsWith("fp8") && gpu.allocator().owns(q.w().codes())),
                        "FP8 linears are held FP8 in device memory");
                List<org.orbitrl.model.arch.CausalLM.Segment> batch = new java.util.ArrayList<>();
                for (int[] s : seqs) {
                    batch.add(new org.orbitrl.model.arch.CausalLM.Segment(s, null));
                }
                float[] got = gpu.allocator().toFloats(m.model().forward(batch));
                Qwen3FixtureTest.assertClose(layout + " on cuda (" + (gpu.exact() ? "exact" : "default kernels") + ") vs the cpu",
                        want, got, gpu.exact() ? 1e-4f : 6e-2f);
            }
        }
    }
}
