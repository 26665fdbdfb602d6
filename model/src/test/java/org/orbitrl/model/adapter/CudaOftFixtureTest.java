package org.orbitrl.model.adapter;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.Qwen3FixtureTest;
import org.orbitrl.model.arch.Qwen3Model;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The PEFT OFT fixtures on the CUDA backend in exact mode, with the OFT parameters and gradients in
 * device memory, for qwen3 and qwen3_moe and the three configurations of {@link OftFixtureTest}
 * (exact Cayley, Cayley-Neumann, shared block with coft): logits within 1e-4 absolute of
 * {@code reference_oft}; every parameter gradient within 1e-3 relative (‖ours − ref‖ / ‖ref‖) of
 * PEFT's {@code grad.*} and within 1e-4 relative of the CPU backend's OFT gradient from the same
 * fixture; with coft, the parameters after the forward's projection equal the CPU's within
 * 1e-6·|cpu| + 1e-9. Skipped where no CUDA device is present.
 */
class CudaOftFixtureTest {
    private static CudaBackend gpu;

    @BeforeAll
    static void open() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        gpu = new CudaBackend(0, CudaBackend.defaultCacheDir(), true);
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
        }
    }

    static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> cases() {
        return OftFixtureTest.cases();
    }

    private static double relativeError(float[] got, float[] ref) {
        double diff = 0;
        double norm = 0;
        for (int i = 0; i < ref.length; i++) {
            diff += (got[i] - ref[i]) * (double) (got[i] - ref[i]);
            norm += ref[i] * (double) ref[i];
        }
        assertTrue(norm > 0, "reference is zero");
        return Math.sqrt(diff / norm);
    }

    @ParameterizedTest
    @MethodSource("cases")
    void oftLogitsAndGradientsOnTheDeviceMatchPeftAndTheCpu(String arch, String variant) {
        OftFixtureTest.Setup cpu = OftFixtureTest.setup(arch, variant);
        Map<String, float[]> cpuGrads = OftFixtureTest.gradients(cpu, false);

        Path dir = OftFixtureTest.root().resolve(arch).resolve(variant);
        Path base = TestSafetensors.fixtures().resolve(arch);
        Qwen3Model model = Qwen3Model.load(Qwen3FixtureTest.config(arch), new TestSafetensors(base.resolve("model.safetensors")),
                gpu, Qwen3Model.LoadOptions.full());
        OftAdapter adapter = OftAdapter.load(AdapterConfig.read(dir.resolve("adapter")),
                new TestSafetensors(dir.resolve("adapter/adapter_model.safetensors")), model, gpu.allocator());
        assertTrue(gpu.allocator().owns(adapter.params().get(0).value()), "OFT parameters live on the device");
        TestSafetensors ref = new TestSafetensors(dir.resolve("reference_oft.safetensors"));
        List<int[]> seqs = cpu.seqs();

        var tape = model.forwardTrain(seqs, false);
        Tensor logits = gpu.toHost(tape.logits());
        Qwen3FixtureTest.assertClose(arch + "/" + variant + " OFT logits on cuda", ref.get("logits").toFloatArray(),
                logits.toFloatArray(), 1e-4f);

        adapter.zeroGrad();
        model.backward(tape, gpu.allocator().upload(MemoryCategory.ACTIVATIONS, FixtureLoss.dLogits(logits, ref, seqs)));
        Map<String, float[]> grads = new LinkedHashMap<>();
        adapter.peftGradients().forEach((k, g) -> grads.put(k, gpu.allocator().toHost(g).toFloatArray()));
        double worstPeft = 0;
        double worstCpu = 0;
        for (var e : grads.entrySet()) {
            String refName = "grad." + e.getKey().replace(".oft_R.weight", ".oft_R.default.weight");
            double rp = relativeError(e.getValue(), ref.get(refName).toFloatArray());
            double rc = relativeError(e.getValue(), cpuGrads.get(e.getKey()));
            assertTrue(rp < 1e-3, refName + " on cuda vs peft: relative error " + rp + " (limit 1e-3)");
            assertTrue(rc < 1e-4, e.getKey() + " on cuda vs cpu: relative error " + rc + " (limit 1e-4)");
            worstPeft = Math.max(worstPeft, rp);
            worstCpu = Math.max(worstCpu, rc);
        }
        assertEquals(cpuGrads.keySet(), grads.keySet(), "the same OFT parameters on cpu and cuda");
        for (OftAdapter.Param p : adapter.params()) {
            float[] want = cpu.adapter().params().stream().filter(q -> q.name().equals(p.name())).findFirst()
                    .orElseThrow().value().toFloatArray();
            float[] got = gpu.allocator().toHost(p.value()).toFloatArray();
            for (int i = 0; i < want.length; i++) {
                assertEquals(want[i], got[i], 1e-6 * Math.abs(want[i]) + 1e-9, p.name() + " [" + i + "] after the forward");
            }
        }
        System.out.printf("%s/%s on cuda: %d OFT gradients, worst relative error %.3g vs peft, %.3g vs cpu%n", arch,
                variant, grads.size(), worstPeft, worstCpu);
    }
}
