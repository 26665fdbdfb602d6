package org.orbitrl.scheduler.rollout;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.CapturedStep;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.DecodeStep;
import org.orbitrl.model.kv.PagedDecode;
import org.orbitrl.model.kv.PagedSequence;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * A captured decode step zero-fills nothing: every allocation of a Qwen3-MoE step (the transformers qwen3_moe fixture,
 * INT4 experts, a bf16 paged cache, no adapter) is written whole by its first operation, so none asks for a memset node,
 * which each replay would run (on an H100 they were about a sixth of Qwen3-30B-A3B's one-sequence step). At one
 * sequence and at two padded to six rows; each step's replay equals the same step run eagerly, bit for bit, over four
 * steps, and the real rows' logits are finite. Under the device test JVMs' {@code orbit.poisonUninitialized} the allocations start as NaN, so a value read
 * before it is written shows in the logits. Skipped where no CUDA device is present.
 */
class CudaCapturedFillsTest {
    private static final Path HF = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf");
    private static CudaBackend gpu;

    @BeforeAll
    static void open() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
        gpu = new CudaBackend(0, CudaBackend.defaultCacheDir());
    }

    @AfterAll
    static void close() {
        if (gpu != null) {
            gpu.close();
        }
    }

    @Test
    void aQwen3MoeDecodeStepCapturesNoZeroFill() {
        try (LoadedModel m = LoadedModel.load(HF.resolve("qwen3_moe"), gpu, BaseFormat.INT4)) {
            CausalLM model = m.model();
            CausalLM.CacheGeometry g = model.cacheGeometry();
            BlockPool pool = new BlockPool(gpu.allocator(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), 16, 64, true,
                    DType.BF16);
            SplittableRandom r = new SplittableRandom(17);
            int vocab = 256;
            for (int[] shape : new int[][]{{1, 1}, {2, 6}}) {   // {sequences, rows of the step}
                List<PagedSequence> seqs = new ArrayList<>();
                for (int i = 0; i < shape[0]; i++) {
                    seqs.add(prefilled(model, pool, r, 9 + 7 * i, vocab));
                }
                DecodeStep step = model.decodeStep(pool, shape[1], PagedDecode.tableWidth(8));
                CapturedStep captured = null;
                try {
                    for (int s = 0; s < 4; s++) {
                        List<CausalLM.Segment> segs = new ArrayList<>();
                        for (PagedSequence q : seqs) {
                            segs.add(new CausalLM.Segment(new int[]{r.nextInt(vocab)}, q));
                        }
                        step.prepare(segs);
                        Tensor out = step.run();   // the same inputs; it writes the cache rows the replay writes again
                        float[] eager = host(out);
                        gpu.allocator().release(out);
                        if (captured == null) {
                            long before = gpu.allocator().capturedZeroFills();
                            captured = gpu.captureStep(step::run);
                            assertEquals(0, gpu.allocator().capturedZeroFills() - before, shape[0] + " sequences in a step of "
                                    + shape[1] + " rows: zero fills captured into the step");
                        }
                        float[] replayed = host(captured.replay());
                        step.finish(segs);
                        for (int i = 0; i < shape[0] * (eager.length / shape[1]); i++) {   // the real rows: no poison reached them
                            if (!Float.isFinite(eager[i])) {
                                throw new AssertionError(shape[1] + " rows, step " + s + ": logit " + i + " of the eager run is "
                                        + eager[i]);
                            }
                        }
                        assertArrayEquals(eager, replayed, shape[1] + " rows, step " + s + ": the replay's logits against the eager run's");
                    }
                } finally {
                    if (captured != null) {
                        captured.close();
                    }
                    seqs.forEach(PagedSequence::close);
                }
            }
        }
    }

    private static PagedSequence prefilled(CausalLM model, BlockPool pool, SplittableRandom r, int length, int vocab) {
        PagedSequence s = new PagedSequence(pool);
        int[] prompt = new int[length];
        for (int i = 0; i < length; i++) {
            prompt[i] = r.nextInt(vocab);
        }
        gpu.allocator().release(model.forward(List.of(new CausalLM.Segment(prompt, s))));
        return s;
    }

    private static float[] host(Tensor logits) {
        return gpu.toHost(logits).toFloatArray();
    }
}
