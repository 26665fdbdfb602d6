package org.orbitrl.model.arch;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.adapter.LoraFixtureTest;
import org.orbitrl.model.nn.Weight;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The grouped sparse MoE block on the CUDA backend (default mode: routing, grouping and the routing
 * backward in {@code moe_train.cu}, experts dequantized C at a time to bf16 and multiplied by cuBLAS)
 * against the per-expert path with host routing on the CPU backend, on the qwen3_moe fixture with its
 * PEFT LoRA adapter: bf16 experts with C = 2 and int4-g32 experts with C = 1, 3 and E. Logits within
 * 3e-2 absolute (x rounded to bf16 for the expert products), every LoRA gradient within 3e-2 relative
 * (‖cuda − cpu‖ / ‖cpu‖). Skipped where no CUDA device is present.
 */
class CudaGroupedMoeTest {
    private static final Path DIR = TestSafetensors.fixtures().resolve("qwen3_moe");
    private static CudaBackend gpu;

    @BeforeAll
    static void open() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        gpu = new CudaBackend();
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
        }
    }

    @Test
    void groupedBlockOnCudaMatchesThePerExpertCpuPath() {
        for (String form : new String[]{"bf16", "int4-g32"}) {
            Result want = run(Backends.cpu(), form, -1, null);
            for (int chunk : form.equals("bf16") ? new int[]{2} : new int[]{1, 3, 8}) {
                Result got = run(gpu, form, chunk, want.dLogits);
                Qwen3FixtureTest.assertClose(form + " logits on cuda, chunk " + chunk, want.logits, got.logits, 3e-2f);
                assertEquals(want.grads.keySet(), got.grads.keySet(), "adapter gradients");
                double worst = 0;
                for (var e : want.grads.entrySet()) {
                    float[] ref = e.getValue();
                    float[] g = got.grads.get(e.getKey());
                    double diff = 0;
                    double norm = 0;
                    for (int i = 0; i < ref.length; i++) {
                        diff += (g[i] - ref[i]) * (double) (g[i] - ref[i]);
                        norm += ref[i] * (double) ref[i];
                    }
                    double rel = Math.sqrt(diff / norm);
                    assertTrue(norm > 0, e.getKey() + ": cpu gradient is zero");
                    assertTrue(rel < 3e-2, e.getKey() + " " + form + " chunk " + chunk + ": relative error " + rel + " (limit 3e-2)");
                    worst = Math.max(worst, rel);
                }
                System.out.printf("%s experts, chunk %d on cuda: %d LoRA gradients, worst relative error %.3g%n", form, chunk,
                        want.grads.size(), worst);
            }
        }
    }

    private record Result(float[] logits, Map<String, float[]> grads, Tensor dLogits) {
    }

    /** chunk -1: per expert with host routing; otherwise grouped with chunk C. The loss gradient d (null: from these logits). */
    private static Result run(Backend b, String form, int chunk, Tensor given) {
        Qwen3Model.LoadOptions opts = form.equals("bf16") ? Qwen3Model.LoadOptions.full()
                : new Qwen3Model.LoadOptions(w -> Weight.of(QuantFormats.byName(form).quantize(w)));
        Qwen3Model m = Qwen3Model.load(Qwen3FixtureTest.config("qwen3_moe"), new TestSafetensors(DIR.resolve("model.safetensors")),
                b, opts);
        m.setGroupedExperts(chunk >= 0);
        m.setExpertChunk(Math.max(chunk, 0));
        TensorAllocator mem = b == gpu ? gpu.allocator() : TensorAllocator.heap();
        var adapter = LoraAdapter.load(AdapterConfig.read(DIR.resolve("adapter")),
                new TestSafetensors(DIR.resolve("adapter/adapter_model.safetensors")), m, mem);
        var base = LoraFixtureTest.setup("qwen3_moe");
        var tape = m.forwardTrain(base.seqs(), false);
        Tensor logits = b.allocator().toHost(tape.logits());
        var cpuSetup = new LoraFixtureTest.Setup(base.model(), base.adapter(), base.ref(), base.seqs());
        Tensor d = given != null ? given : dLogits(cpuSetup, logits);
        adapter.zeroGrad();
        m.backward(tape, b.allocator().upload(MemoryCategory.ACTIVATIONS, d));
        Map<String, float[]> grads = new LinkedHashMap<>();
        adapter.peftGradients().forEach((k, g) -> grads.put(k, b.allocator().toHost(g).toFloatArray()));
        return new Result(logits.toFloatArray(), grads, d);
    }

    /** The fixture's policy-gradient loss gradient for these logits (as {@link LoraFixtureTest#gradients}). */
    private static Tensor dLogits(LoraFixtureTest.Setup s, Tensor logits) {
        float[] adv = s.ref().get("advantages").toFloatArray();
        Tensor mask = s.ref().get("completion_mask"); // [B, T]
        int b = s.seqs().size();
        int t = s.seqs().get(0).length;
        int v = logits.size(1);
        double denom = 0;
        for (int i = 0; i < b; i++) {
            for (int j = 1; j < t; j++) {
                denom += mask.getFloat(i, j);
            }
        }
        float[] lg = logits.toFloatArray();
        float[] d = new float[lg.length];
        for (int i = 0; i < b; i++) {
            for (int j = 0; j + 1 < t; j++) {
                float c = (float) (adv[i] * mask.getFloat(i, j + 1) / denom);
                int row = (i * t + j) * v;
                float max = Float.NEGATIVE_INFINITY;
                for (int k = 0; k < v; k++) {
                    max = Math.max(max, lg[row + k]);
                }
                double sum = 0;
                for (int k = 0; k < v; k++) {
                    sum += Math.exp(lg[row + k] - max);
                }
                int target = s.seqs().get(i)[j + 1];
                for (int k = 0; k < v; k++) {
                    float p = (float) (Math.exp(lg[row + k] - max) / sum);
                    d[row + k] = -c * ((k == target ? 1f : 0f) - p);
                }
            }
        }
        return Tensor.of(d, (long) b * t, v);
    }
}
