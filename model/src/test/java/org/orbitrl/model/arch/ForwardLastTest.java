package org.orbitrl.model.arch;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.TestSafetensors;

/**
 * {@link CausalLM#forwardLast}: each segment's last row of {@link CausalLM#forward}'s logits, bit for bit (the CPU's
 * kernels are batch-invariant), over a prefill of prompts of different lengths and a decode step after it, on every
 * architecture's transformers fixture; and the logits it allocates are those rows alone.
 */
class ForwardLastTest {
    /** The most LOGITS bytes allocated by one call. */
    private static final class Counting implements TensorAllocator {
        long logits;

        @Override
        public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
            Tensor t = TensorAllocator.heap().allocate(category, dtype, shape);
            if (category == MemoryCategory.LOGITS) {
                logits += t.byteSize();
            }
            return t;
        }
    }

    @Test
    void theLastRowsOfEverySegmentBitForBit() {
        for (String arch : List.of("qwen3", "qwen3_moe", "gpt_oss", "deepseek_v3", "deepseek_v4")) {
            Counting count = new Counting();
            try (CpuBackend cpu = new CpuBackend(2, count);
                 LoadedModel m = LoadedModel.load(TestSafetensors.fixtures().resolve(arch), cpu, BaseFormat.BF16)) {
                CausalLM model = m.model();
                SplittableRandom rnd = new SplittableRandom(arch.hashCode());
                int[][] prompts = {new int[7], new int[4], new int[1], new int[11]};
                for (int[] p : prompts) {
                    for (int i = 0; i < p.length; i++) {
                        p[i] = 1 + rnd.nextInt(model.vocabSize() - 1);
                    }
                }
                List<KvCache> full = new ArrayList<>();
                List<KvCache> last = new ArrayList<>();
                for (int i = 0; i < prompts.length; i++) {
                    full.add(model.newCache(32));
                    last.add(model.newCache(32));
                }
                for (int step = 0; step < 2; step++) {   // the prefill, then one decode token each
                    List<CausalLM.Segment> a = new ArrayList<>();
                    List<CausalLM.Segment> b = new ArrayList<>();
                    for (int i = 0; i < prompts.length; i++) {
                        int[] toks = step == 0 ? prompts[i] : new int[]{1 + rnd.nextInt(model.vocabSize() - 1)};
                        a.add(new CausalLM.Segment(toks, full.get(i)));
                        b.add(new CausalLM.Segment(toks, last.get(i)));
                    }
                    float[] all = model.forward(a).toFloatArray();
                    count.logits = 0;
                    Tensor got = model.forwardLast(b);
                    int v = model.vocabSize();
                    assertEquals(List.of(prompts.length, v), Arrays.stream(got.shape()).boxed().map(Long::intValue).toList(),
                            arch + " step " + step);
                    float[] rows = got.toFloatArray();
                    int[] lastRows = CausalLM.lastRows(b);
                    for (int i = 0; i < prompts.length; i++) {
                        assertArrayEquals(Arrays.copyOfRange(all, lastRows[i] * v, (lastRows[i] + 1) * v),
                                Arrays.copyOfRange(rows, i * v, (i + 1) * v), arch + " step " + step + " segment " + i);
                    }
                    assertEquals((long) prompts.length * v * 4, count.logits, arch + " step " + step + ": logits bytes");
                }
            }
        }
    }
}
