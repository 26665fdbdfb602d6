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
 * the logits against the CPU backend's for the same load, within 1e-4 in exact mode and 6e-2 with the default kernels.
 * That bound: above the GEMV's rows the default kernels round each product's rows to bf16 (2⁻⁹ relative) and here the
 * dequantized weight too (an E4M3 value times an f32 or bf16 scale is not in general a bf16 value), two roundings a
 * product where a bf16 checkpoint has one: twice Qwen3's 3e-2 of {@code CudaQwen3Test}, DeepSeek-V3's 6e-2 of {@code
 * CudaArchFixtureTest} (the H200, Qwen3-MoE: worst 0.046 with f32 scales, 0.035 with bf16 ones). DeepSeek-V3 ({@link DeepseekV3FormatsTest#export}:
 * every projection FP8 with f32 scales as V3 or E8M0 as V3.1) and Qwen3-MoE ({@link Qwen3Fp8CheckpointTest#export}:
 * Qwen's fp8 releases, f32 or bf16 scales). Skipped, with the reason, where no CUDA device is present.
 */
class CudaFp8CheckpointTest {
    @RegisterExtension
    static final CudaBackendPair GPU = new CudaBackendPair();

    /** The default kernels' bound on logits (see the class comment). */
    private static final float DEFAULT_KERNEL_ATOL = 6e-2f;

    @TempDir
    Path tmp;

    @ParameterizedTest
    @ValueSource(booleans = {false, true})
    void qwen3Fp8CheckpointOnTheDeviceMatchesTheHost(boolean bf16Scales) throws IOException {
        Path[] dirs = Qwen3Fp8CheckpointTest.export(tmp, bf16Scales, null);
        compare("qwen3_moe fp8 (" + (bf16Scales ? "bf16" : "f32") + " scales)", dirs[0], Qwen3Fp8CheckpointTest.sequences(),
                DEFAULT_KERNEL_ATOL);
    }

    @ParameterizedTest
    @ValueSource(strings = {"fp8", "fp8_ue8m0"})
    void deepseekV3Fp8CheckpointOnTheDeviceMatchesTheHost(String layout) throws IOException {
        DeepseekV3FormatsTest.Export ex = DeepseekV3FormatsTest.export(tmp, layout, null, true);
        compare(layout, ex.quantized(), DeepseekV3FormatsTest.sequences(), DEFAULT_KERNEL_ATOL);
    }

    /** Kept as stored, an fp8 checkpoint's FP8 experts are refused by the CUDA backend before loading. */
    @org.junit.jupiter.api.Test
    void fp8ExpertsKeptAsStoredAreRefusedBeforeLoading() throws IOException {
        Path[] dirs = Qwen3Fp8CheckpointTest.export(tmp, false, null);
        IllegalArgumentException e = org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class,
                () -> LoadedModel.load(dirs[0], GPU.fast(), BaseFormat.BF16).close());
        assertTrue(e.getMessage().contains("FP8") && e.getMessage().contains("int4, mxfp4 or nvfp4"), e.getMessage());
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
