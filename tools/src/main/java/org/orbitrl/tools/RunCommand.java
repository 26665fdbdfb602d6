package org.orbitrl.tools;

import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.loop.ForegroundRun;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.nio.file.Path;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicBoolean;

/** {@code orbit run JOB.yaml}: one job in the foreground, without a daemon. */
@Command(name = "run", mixinStandardHelpOptions = true,
        description = "Runs a job file in the foreground: plan, load, evaluate, train, evaluate, report. "
                + "Ctrl-C stops after the current step with a checkpoint; running it again resumes.")
final class RunCommand implements Callable<Integer> {

    @Parameters(index = "0", description = "the job file (YAML)")
    Path jobFile;

    @Option(names = "--data", description = "the job's data folder (default: data/<job name>)")
    Path data;

    @Option(names = "--steps", description = "override the job file's steps")
    Long steps;

    @Override
    public Integer call() throws Exception {
        JobSpec spec = CommandFiles.readJob(jobFile);
        if (steps != null) {
            spec = spec.withSteps(steps);
        }
        Path dir = data != null ? data : Path.of("data", spec.name());
        AtomicBoolean stop = new AtomicBoolean();
        Thread main = Thread.currentThread();
        Thread hook = new Thread(() -> {
            stop.set(true);
            try {
                main.join(120_000);
            } catch (InterruptedException ignored) {
                Thread.currentThread().interrupt();
            }
        }, "orbit-run-stop");
        Runtime.getRuntime().addShutdownHook(hook);
        try {
            ForegroundRun.run(spec, dir, System.out, stop);
        } finally {
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException shuttingDown) {
                // the hook is running: it waits for this thread to finish
            }
        }
        return 0;
    }
}
