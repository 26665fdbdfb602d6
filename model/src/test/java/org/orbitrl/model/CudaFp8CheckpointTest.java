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
 * Fine-grained fp8 checkpoints on the CUDA backend, their routed experts quantized to INT4 g32 on load from their
 * decoded values, the other FP8 linears held FP8 in device memory (the FP8 GEMV at few rows, else dequantized there):
 * the logits against the CPU backend's for the same load, within 1e-4 in exact mode and, with the default kernels
 * (their bf16 rows), within the bound of each fixture's default-kernel test (6e-2 for DeepSeek-V3 as {@code
 * CudaArchFixtureTest}, 3e-2 for Qwen3-MoE as {@code CudaQwen3Test}). DeepSeek-V3 ({@link DeepseekV3FormatsTest#export}:
 * every projection FP8 with f32 scales as V3 or E8M0 as V3.1) and Qwen3-MoE ({@link Qwen3Fp8CheckpointTest#export}:
 * Qwen's fp8 releases, f32 or bf16 scales). Skipped, with the reason, where no CUDA device is present.
 */
class CudaFp8CheckpointTest {
    @RegisterExtension
    static final CudaBackendPair GPU = new CudaBackendPair();

    @TempDir
    Path tmp;

    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void qwen3Fp8CheckpointOnTheDeviceMatchesTheHost(boolean bf16Scales) throws IOException {
        Path[] dirs = Qwen3Fp8CheckpointTest.export(tmp, bf16Scales, null);
        compare("qwen3_moe fp8 (" + (bf16Scales ? "bf16" : "f32") + " scales)", dirs[0], Qwen3Fp8CheckpointTest.sequences(),
                3e-2f);
    }

    @ParameterizedTest
    @ValueSource(strings = {"fp8", "fp8_ue8m0"})
    void deepseekV3Fp8CheckpointOnTheDeviceMatchesTheHost(String layout) throws IOException {
        DeepseekV3FormatsTest.Export ex = DeepseekV3FormatsTest.export(tmp, layout, null, true);
        compare(layout, ex.quantized(), DeepseekV3FormatsTest.sequences(), 6e-2f);
    }

    private static void compare(String what, Path dir, List<int[]> seqs, float defaultAtol) {
        float[] want;
        try (LoadedModel m = LoadedModel.load(dir, Backends.cpu(), BaseFormat.INT4)) {
            want = DeepseekV3FormatsTest.logits(m.model(), seqs, new float[1][]);
        }
        for (CudaBackend gpu : new CudaBackend[]{GPU.exact(), GPU.fast()}) {
            try (LoadedModel m = LoadedModel.load(dir, gpu, BaseFormat.INT4)) {
                assertTrue(m.targets().linearModules().values().stream().anyMatch(l -> l.weight() instanceof Weight.Quantized q
                        && q.w().format().name().startsWith("fp8") && gpu.allocator().owns(q.w().codes())),
                        "FP8 linears are held FP8 in device memory");
                List<org.orbitrl.model.arch.CausalLM.Segment> batch = new java.util.ArrayList<>();
                for (int[] s : seqs) {
                    batch.add(new org.orbitrl.model.arch.CausalLM.Segment(s, null));
                }
                float[] got = gpu.allocator().toFloats(m.model().forward(batch));
                Qwen3FixtureTest.assertClose(what + " on cuda (" + (gpu.exact() ? "exact" : "default kernels") + ") vs the cpu",
                        want, got, gpu.exact() ? 1e-4f : defaultAtol);
            }
        }
    }
}
