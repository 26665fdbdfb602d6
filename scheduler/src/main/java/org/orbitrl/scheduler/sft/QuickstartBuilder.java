package org.orbitrl.scheduler.sft;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.adapter.LoraLinear;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.scheduler.rollout.Completion;
import org.orbitrl.scheduler.rollout.Request;
import org.orbitrl.scheduler.rollout.RolloutEngine;
import org.orbitrl.scheduler.rollout.SamplingParams;
import org.orbitrl.scheduler.task.Problem;
import org.orbitrl.scheduler.task.Task;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * Makes Orbit's shipped quickstart base: a small Qwen3-MoE initialised at random from a seed,
 * taught a task partly by supervised fine-tuning of a full-rank LoRA on every linear layer and
 * routed expert, merged into the base, with the routed experts written as INT4 group-32.
 * Everything is derived from the seed: the same settings give the same model bytes.
 *
 * @param seed    seed of the initial weights, the adapter and the data order
 * @param steps   supervised steps
 * @param batch   examples per step
 * @param lr      AdamW learning rate
 * @param rank    LoRA rank (the hidden size makes it full rank)
 */
public record QuickstartBuilder(TinyMoe shape, long seed, int steps, int batch, double lr, int rank) {

    /** The task data: a batch of examples for a step, and held-out examples for measuring. */
    public interface Data {
        List<SftTrainer.Example> batch(long step, int size);

        List<SftTrainer.Example> heldOut(int size);
    }

    /** Trains and writes the model to {@code out}; returns held-out greedy accuracy of the written (INT4) model. */
    public double build(Path out, Data data, Backend backend, PrintStream log) throws IOException {
        Path init = Files.createTempDirectory("orbit-quickstart-init");
        try {
            Map<String, Tensor> weights = shape.randomWeights(seed);
            shape.write(init, weights, false);
            try (LoadedModel lm = LoadedModel.load(init, backend, BaseFormat.BF16)) {
                AdapterConfig cfg = AdapterConfig.lora(rank, rank, List.of("q_proj", "k_proj", "v_proj", "o_proj", "gate", "lm_head"),
                        List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));
                LoraAdapter adapter = LoraAdapter.create(cfg, lm.targets(), backend.allocator(), seed + 1);
                SftTrainer trainer = new SftTrainer((Trainable) lm.model(), adapter, lr, 1.0, backend.allocator());
                long t0 = System.nanoTime();
                for (int step = 1; step <= steps; step++) {
                    double loss = trainer.step(data.batch(step, batch));
                    if (step % 50 == 0 || step == 1 || step == steps) {
                        log.printf("sft step %4d/%d  loss %.4f  %.1fs%n", step, steps, loss, (System.nanoTime() - t0) / 1e9);
                    }
                    if (step % 250 == 0 && step < steps) {
                        log.printf("sft step %4d  held-out greedy accuracy %.3f%n", step, greedyAccuracy(lm, data.heldOut(100)));
                    }
                }
                merge(lm.targets(), weights);
            }
            shape.write(out, weights, true);
        } finally {
            try (Stream<Path> files = Files.walk(init)) {
                for (Path p : files.sorted(Comparator.reverseOrder()).toList()) {
                    Files.deleteIfExists(p);
                }
            }
        }
        try (LoadedModel written = LoadedModel.load(out, backend, BaseFormat.BF16)) {
            double acc = greedyAccuracy(written, data.heldOut(100));
            log.printf("written %s: experts INT4 g32, held-out greedy accuracy %.3f%n", out, acc);
            return acc;
        }
    }

    /** Adds every LoRA delta (scale·B·A) to the weight it adapts. */
    static void merge(AdapterTargets model, Map<String, Tensor> weights) {
        List<Linear> all = new ArrayList<>(model.linearModules().values());
        for (AdapterTargets.ExpertSet s : model.expertSets()) {
            all.addAll(s.gate());
            all.addAll(s.up());
            all.addAll(s.down());
        }
        for (Linear l : all) {
            if (l.adapter() instanceof LoraLinear lora) {
                Tensor w = weights.get(l.name() + ".weight");
                float[] base = w.toFloatArray();
                float[] d = lora.delta().toFloatArray();
                for (int i = 0; i < base.length; i++) {
                    base[i] += d[i];
                }
                weights.put(l.name() + ".weight", Tensor.of(base, w.shape()));
            }
        }
    }

    /** Fraction of held-out examples whose greedy completion equals the expected one exactly. */
    public static double greedyAccuracy(LoadedModel lm, List<SftTrainer.Example> examples) {
        RolloutEngine engine = new RolloutEngine(lm.model(), null, new RolloutEngine.Options(16, 4096, 256, 4096), null);
        List<Request> reqs = new ArrayList<>();
        for (int i = 0; i < examples.size(); i++) {
            SftTrainer.Example e = examples.get(i);
            int end = e.completion()[e.completion().length - 1];   // the task's end marker
            reqs.add(Request.of("e" + i, e.prompt(), SamplingParams.greedy(e.completion().length + 2)
                    .withStops(List.of(end, ByteTokenizerFiles.EOS), List.of())));
        }
        List<Completion> out = engine.generate(reqs);
        if (Boolean.getBoolean("orbit.sft.show")) {
            for (int i = 0; i < Math.min(4, examples.size()); i++) {
                System.out.println("  " + ByteTokenizerFiles.decode(examples.get(i).prompt()) + " expected "
                        + java.util.Arrays.toString(examples.get(i).completion()) + " got " + java.util.Arrays.toString(out.get(i).tokens()));
            }
        }
        int ok = 0;
        for (int i = 0; i < examples.size(); i++) {
            if (java.util.Arrays.equals(out.get(i).tokens(), examples.get(i).completion())) {
                ok++;
            }
        }
        return ok / (double) examples.size();
    }

    /**
     * Supervised data from a verifiable task: the task's prompt, then its reference completion
     * (answer and end marker), as bytes. Training draws from the task's train split; the held-out
     * examples are its evaluation split, which training never sees.
     */
    public static Data fromTask(Task task, long seed) {
        return new Data() {
            @Override
            public List<SftTrainer.Example> batch(long step, int size) {
                return task.trainBatch(seed, step, size).stream().map(p -> example(task, p)).toList();
            }

            @Override
            public List<SftTrainer.Example> heldOut(int size) {
                return task.evalSplit(size).stream().map(p -> example(task, p)).toList();
            }
        };
    }

    static SftTrainer.Example example(Task task, Problem p) {
        return new SftTrainer.Example(ByteTokenizerFiles.encode(p.prompt()), ByteTokenizerFiles.encode(task.completion(p)));
    }
}
