package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.quant.QuantFormat;
import org.orbitrl.kernels.quant.QuantFormats;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Function;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The per-expert MoE path's active-expert chunks (DeepSeek-V3 / Kimi-K2's routed experts with the grouped path off, as
 * under expert parallelism or OFT on the experts; INT4 on load) through one
 * dequantization buffer that every MoE layer of a model instance shares: the DeepSeek-V3 fixture (two MoE layers of 8
 * experts, I 32, h 64) allocates exactly one {@code DEQUANT_BUFFERS} tensor of C expert slots (gate, up and down, f32)
 * whatever its layer count, a view of the model its own one; and the logits are the same bits for chunks of 1, 2 and 8
 * experts and within 1e-4 of the same model with its experts dequantized on load (what a buffer overwritten while a
 * layer still read it would break). The grouped path (the default) gives the per-expert path's logits within 1e-5 of
 * 1e-5 (absolute), for every chunk the same bits.
 */
class ExpertChunkBufferTest {
    private static final int INTER = 32;
    private static final int HIDDEN = 64;

    /** Counts the dequantization buffers allocated through it (host memory otherwise). */
    private static final class Counting implements TensorAllocator {
        final TensorAllocator heap = TensorAllocator.heap();
        final List<Long> dequant = new ArrayList<>();

        @Override
        public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
            Tensor t = heap.allocate(category, dtype, shape);
            if (category == MemoryCategory.DEQUANT_BUFFERS) {
                dequant.add(t.byteSize());
            }
            return t;
        }
    }

    private static DeepseekV3Model load(Backend backend, Function<Tensor, Weight> experts) {
        var dir = TestSafetensors.fixtures().resolve("deepseek_v3");
        ModelSpec spec = ConfigLoader.load(dir);
        return DeepseekV3Model.load(DeepseekV3Config.from(spec), spec.mla().ropeInterleave(), spec.quantization(),
                new TestSafetensors(dir.resolve("model.safetensors")), backend, new Qwen3Model.LoadOptions(experts));
    }

    @Test
    void everyMoeLayerOfAModelSharesOneChunkBuffer() {
        QuantFormat int4 = QuantFormats.byName("int4-g32");
        List<int[]> seqs = DeepseekV3FixtureTest.inputs(DeepseekV3FixtureTest.reference());
        Backend plain = new CpuBackend(1);
        float[] dequantized = load(plain, w -> {
            Tensor d = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.F32, w.shape());
            plain.dequantize(int4.quantize(w), d);
            return Weight.of(d);
        }).forwardTrain(seqs, false).logits().toFloatArray();
        float[] first = null;
        for (int chunk : new int[]{1, 2, 8}) {
            Counting mem = new Counting();
            DeepseekV3Model m = load(new CpuBackend(1, mem), w -> Weight.of(int4.quantize(w)));
            m.setGroupedExperts(false);
            m.setExpertChunk(chunk);
            float[] logits = m.forwardTrain(seqs, false).logits().toFloatArray();
            m.forwardTrain(seqs, false);
            long slotBytes = 3L * INTER * HIDDEN * DType.F32.bytes();
            assertEquals(List.of(chunk * slotBytes), mem.dequant,
                    "chunk " + chunk + ": one buffer of " + chunk + " expert slots for the model's 2 MoE layers, over two forwards");
            DeepseekV3Model view = m.view();
            view.forwardTrain(seqs, false);
            assertEquals(List.of(chunk * slotBytes, chunk * slotBytes), mem.dequant, "chunk " + chunk + ": the view's own buffer");
            if (first == null) {
                first = logits;
                Qwen3FixtureTest.assertClose("INT4 experts in chunks of 1 vs dequantized on load", dequantized, logits, 1e-4f);
            } else {
                assertArrayEquals(first, logits, 0f, "logits with chunks of " + chunk + " against chunks of 1");
            }
        }
    }

    @Test
    void theGroupedPathGivesThePerExpertLogits() {
        QuantFormat int4 = QuantFormats.byName("int4-g32");
        List<int[]> seqs = DeepseekV3FixtureTest.inputs(DeepseekV3FixtureTest.reference());
        DeepseekV3Model perExpert = load(new CpuBackend(1), w -> Weight.of(int4.quantize(w)));
        perExpert.setGroupedExperts(false);
        perExpert.setExpertChunk(2);
        float[] ref = perExpert.forwardTrain(seqs, false).logits().toFloatArray();
        float[] first = null;
        for (int chunk : new int[]{0, 1, 3, 8}) {
            DeepseekV3Model m = load(new CpuBackend(1), w -> Weight.of(int4.quantize(w)));
            m.setExpertChunk(chunk);
            float[] logits = m.forwardTrain(seqs, false).logits().toFloatArray();
            Qwen3FixtureTest.assertClose("grouped, chunk " + chunk + ", against per expert", ref, logits, 1e-5f);
            if (chunk > 0) {
                if (first == null) {
                    first = logits;
                } else {
                    assertArrayEquals(first, logits, 0f, "grouped logits with chunks of " + chunk + " against chunks of 1");
                }
            }
        }
    }
}
