package org.orbitrl.scheduler.loop;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.memory.plan.AdapterSpec;
import org.orbitrl.memory.plan.BaseFormat;
import org.orbitrl.memory.plan.BatchShape;
import org.orbitrl.memory.plan.GpuRole;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.memory.plan.NodeSpec;
import org.orbitrl.memory.plan.ParallelLayout;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.scheduler.bench.NextTokenLoss;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The memory planner's training activations for the latent-attention and DeepSeek V4 architectures against what
 * their training steps hold: the transformers fixtures of deepseek_v3 (the Kimi-K2 architecture) and deepseek_v4
 * with their PEFT LoRA adapters (rank 4 on the attention projections and the routed experts), one or two sequences,
 * recompute on and off, forward, next-token loss and adapter-only backward on the CPU backend through the
 * {@link ReleasedOnlyAllocator} (the bytes not yet released explicitly, as a device allocator holds them). Every step
 * must release what it allocated, and the planner, asked about a training GPU of the same shape, must give:
 * <ul>
 *   <li>deepseek_v3: the measured peak of activations within 5%;</li>
 *   <li>deepseek_v4: the same. Its values are kept in the allocator as a device keeps them (the allocator says it
 *       is not host memory), and the CPU backend leaves the sink attention to the host, as the planner counts for a
 *       host backend (one copy of the attention's output a layer where a device holds two).</li>
 * </ul>
 * The logits' peak must equal the planner's f32 logits and their gradient exactly.
 */
class ArchitecturePeaksTest {
    private static final Path HF = Path.of(System.getProperty("orbit.fixtures", "../../shared/fixtures"), "hf");

    /** A step: fixture, sequences of seq tokens, recompute, the recomputed layers' inputs offloaded to the host. */
    record Run(String arch, int sequences, int seq, boolean recompute, boolean offload) {
        Run(String arch, int sequences, int seq, boolean recompute) {
            this(arch, sequences, seq, recompute, false);
        }

        @Override
        public String toString() {
            return arch + ", " + sequences + "x" + seq + " tokens, recompute " + recompute + (offload ? ", inputs offloaded" : "");
        }
    }

    @Test
    void latentAttentionPeaksMatchThePlan() {
        check(runs("deepseek_v3"), 0.95, 1.05);
    }

    @Test
    void deepseekV4PeaksMatchThePlan() {
        check(runs("deepseek_v4"), 0.95, 1.05);
    }

    /**
     * With the recomputed layers' inputs offloaded to the host, a step's adapter gradients are the same bits as with
     * them on the device, and the step holds less: the fixtures of qwen3_moe, deepseek_v3 and deepseek_v4, 2 x 48 tokens.
     */
    @Test
    void offloadedInputsGiveTheSameGradientsForLess() {
        for (String arch : List.of("qwen3_moe", "deepseek_v3", "deepseek_v4")) {
            long[] peak = new long[2];
            List<List<float[]>> grads = new ArrayList<>();
            for (int o = 0; o < 2; o++) {
                AccountingAllocator mem = AccountingAllocator.reachable();
                ReleasedOnlyAllocator released = new ReleasedOnlyAllocator(mem, false, true);
                List<float[]> g = new ArrayList<>();
                measure(new Run(arch, 2, 48, true, o == 1), mem, released, g);
                peak[o] = released.peaks().get(MemoryCategory.ACTIVATIONS);
                grads.add(g);
            }
            assertEquals(grads.get(0).size(), grads.get(1).size(), arch);
            for (int i = 0; i < grads.get(0).size(); i++) {
                assertArrayEquals(grads.get(0).get(i), grads.get(1).get(i), arch + ": adapter gradient " + i);
            }
            assertTrue(peak[1] < peak[0], arch + ": " + peak[1] + " B offloaded, " + peak[0] + " B not");
            System.out.printf("%s: activations %d B with the inputs on the device, %d B offloaded%n", arch, peak[0], peak[1]);
        }
    }

    private static List<Run> runs(String arch) {
        return List.of(new Run(arch, 1, 32, true), new Run(arch, 1, 32, false), new Run(arch, 2, 48, true),
                new Run(arch, 2, 48, false), new Run(arch, 1, 96, true), new Run(arch, 1, 96, true, true),
                new Run(arch, 2, 48, true, true));
    }

    private static void check(List<Run> runs, double low, double high) {
        List<String> failures = new ArrayList<>();
        for (Run r : runs) {
            AccountingAllocator mem = AccountingAllocator.reachable();
            ReleasedOnlyAllocator released = new ReleasedOnlyAllocator(mem, false, true);
            ModelSpec spec = measure(r, mem, released, null);
            Map<MemoryCategory, Long> measured = released.peaks();
            Map<MemoryCategory, Long> planned = plan(spec, r);
            long m = measured.get(MemoryCategory.ACTIVATIONS);
            long p = planned.get(MemoryCategory.ACTIVATIONS);
            long ml = measured.get(MemoryCategory.LOGITS);
            long pl = planned.get(MemoryCategory.LOGITS);
            System.out.printf("%s: activations measured %d B, planned %d B (%.3f); logits %d B, planned %d B%n", r, m, p,
                    p / (double) m, ml, pl);
            if (p < low * m || p > high * m) {
                failures.add(r + ": activations " + m + " B measured, " + p + " B planned, outside [" + low + ", " + high + "]x");
            }
            if (ml != pl) {
                failures.add(r + ": logits " + ml + " B measured, " + pl + " B planned");
            }
            for (MemoryCategory c : List.of(MemoryCategory.ACTIVATIONS, MemoryCategory.LOGITS)) {
                long left = released.leftUnreleased().get(c);
                if (left != 0) {
                    failures.add(r + ": " + c + ": " + left + " B allocated by a step and never released");
                }
            }
        }
        assertTrue(failures.isEmpty(), failures.size() + " mismatches: " + failures);
    }

    /** The planner's bytes for one GPU that only trains: the fixture, its adapter's rank and targets, the run's batch. */
    private static Map<MemoryCategory, Long> plan(ModelSpec spec, Run r) {
        NodeSpec node = new NodeSpec("cpu", 1, 1L << 40);
        int tokens = r.sequences * r.seq;
        PlanRequest req = new PlanRequest(spec, HF.resolve(r.arch).resolve("config.json"), BaseFormat.parse("bf16", spec),
                AdapterSpec.parse("lora:4:attention+experts:f32"),
                new BatchShape(r.sequences, 1, r.seq / 2, r.seq - r.seq / 2, r.sequences), node, ParallelLayout.colocated(1, 1),
                r.recompute, 1, DType.F32, tokens, tokens, 0).withOffloadedInputs(r.offload);
        return MemoryPlanner.budgetOf(req, GpuRole.TRAIN).bytes();
    }

    /**
     * Peaks over a measured step after a warm-up step, of the fixture with its PEFT adapter; returns the model's spec.
     * {@code grads}: when given, receives the adapter's gradients of the measured step.
     */
    private static ModelSpec measure(Run r, AccountingAllocator mem, ReleasedOnlyAllocator released, List<float[]> grads) {
        Path dir = HF.resolve(r.arch);
        mem.pausePeaks();
        Backend backend = new CpuBackend(1, released);
        try (LoadedModel loaded = LoadedModel.load(dir, backend, org.orbitrl.model.BaseFormat.BF16)) {
            Trainable model = (Trainable) loaded.model();
            model.setOffloadedInputs(r.offload);
            Adapter adapter = loaded.loadAdapter(dir.resolve("adapter"));
            SplittableRandom rnd = new SplittableRandom(11);
            List<int[]> seqs = new ArrayList<>();
            for (int b = 0; b < r.sequences; b++) {
                seqs.add(rnd.ints(r.seq, 0, loaded.spec().vocabSize()).toArray());
            }
            Runnable step = () -> {
                adapter.zeroGrad();
                adapter.prepare(backend);
                NextTokenLoss.forwardBackward(model, backend, seqs, r.recompute);
                adapter.unprepare();
            };
            step.run();
            mem.peakOfRepeatedStep(() -> {
                released.restart();
                step.run();
                released.endStep();
            });
            if (grads != null) {
                for (Adapter.Param p : adapter.params()) {
                    grads.add(backend.allocator().toHost(p.grad()).toFloatArray());
                }
            }
            return loaded.spec();
        }
    }
}
