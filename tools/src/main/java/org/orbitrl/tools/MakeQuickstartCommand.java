package org.orbitrl.tools;

import org.orbitrl.kernels.Backends;
import org.orbitrl.scheduler.sft.QuickstartBuilder;
import org.orbitrl.scheduler.sft.TinyMoe;
import org.orbitrl.scheduler.task.Addition;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.concurrent.Callable;

/** {@code orbit make-quickstart}: builds the shipped quickstart base from a seed. */
@Command(name = "make-quickstart", mixinStandardHelpOptions = true,
        description = "Builds a small Qwen3-MoE from a seed, teaches it addition partly (supervised, full-rank LoRA "
                + "merged into the base) and writes it with INT4 group-32 experts.")
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

    @Option(names = "--digits", defaultValue = "2", description = "digits per operand (default ${DEFAULT-VALUE})")
    int digits;

    @Override
    public Integer call() throws Exception {
        TinyMoe shape = TinyMoe.quickstart();
        QuickstartBuilder b = new QuickstartBuilder(shape, seed, steps, batch, lr, shape.hidden());
        b.build(out, QuickstartBuilder.fromTask(new Addition(digits), seed), Backends.cpu(), System.out);
        return 0;
    }
}
