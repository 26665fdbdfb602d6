package org.orbitrl.tools;

import org.orbitrl.kernels.Backends;
import org.orbitrl.scheduler.sft.QuickstartBuilder;
import org.orbitrl.scheduler.sft.TinyMoe;
import org.orbitrl.scheduler.task.Addition;
import org.orbitrl.scheduler.task.Sorting;
import org.orbitrl.scheduler.task.Task;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.concurrent.Callable;

/** {@code orbit make-quickstart}: builds the shipped quickstart base from a seed. */
@Command(name = "make-quickstart", mixinStandardHelpOptions = true,
        description = "Builds a small Qwen3-MoE from a seed, teaches it a task partly (--task: sorting lists by default,"
                + " or addition; supervised, full-rank LoRA merged into the base) and writes it with INT4 group-32 experts.")
final class MakeQuickstartCommand implements Callable<Integer> {

    @Option(names = "--out", required = true, description = "model directory to write")
    Path out;

    @Option(names = "--seed", defaultValue = "0", description = "seed of weights, adapter and data (default ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--steps", defaultValue = "1200", description = "supervised steps (default ${DEFAULT-VALUE})")
    int steps;

    @Option(names = "--batch", defaultValue = "64", description = "examples per step (default ${DEFAULT-VALUE})")
    int batch;

    @Option(names = "--lr", defaultValue = "3e-3", description = "learning rate (default ${DEFAULT-VALUE})")
    double lr;

    @Option(names = "--task", defaultValue = "sort", description = "sort or addition (default ${DEFAULT-VALUE})")
    String task;

    @Option(names = "--digits", defaultValue = "2", description = "addition: digits per operand (default ${DEFAULT-VALUE})")
    int digits;

    @Option(names = "--list-length", defaultValue = "3", description = "sort: items per list (default ${DEFAULT-VALUE})")
    int listLength;

    @Option(names = "--max-value", defaultValue = "9", description = "sort: largest item (default ${DEFAULT-VALUE})")
    int maxValue;

    @Override
    public Integer call() throws Exception {
        TinyMoe shape = TinyMoe.quickstart();
        QuickstartBuilder b = new QuickstartBuilder(shape, seed, steps, batch, lr, shape.hidden());
        Task t = switch (task) {
            case "sort" -> new Sorting(listLength, maxValue);
            case "addition" -> new Addition(digits);
            default -> throw new IllegalArgumentException("--task " + task + ": expected sort or addition");
        };
        b.build(out, QuickstartBuilder.fromTask(t, seed), Backends.cpu(), System.out);
        return 0;
    }
}
