package org.orbitrl.tools;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * {@code tools/orbit}: the one entry point users type. Each subcommand is a small class in this
 * package that delegates to the modules. {@code orbit} alone is a usage error, as an unknown command is: this class is
 * neither Runnable nor Callable, so picocli answers "Missing required subcommand" and the usage on standard error,
 * exit code 2.
 */
@Command(name = "orbit", mixinStandardHelpOptions = true, version = "orbit 0.1.0",
        description = "RL fine-tuning of frozen low-precision MoE models with adapters.",
        subcommands = {
                CommandLine.HelpCommand.class,
                ScoreCommand.class,
                GenerateCommand.class,
                MakeQuickstartCommand.class,
                RunCommand.class,
                ReportCommand.class,
                PlanCommand.class,
        })
public final class Orbit {

    /** Runs a command line and returns its exit code; {@link #main} is the only caller of System.exit. */
    public static int execute(String... args) {
        CommandLine cl = new CommandLine(new Orbit());
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            String file = CommandFiles.describe(ex);
            cmd.getErr().println("orbit " + cmd.getCommandName() + ": " + (file != null ? file : ex.getMessage()));
            if (Boolean.getBoolean("orbit.debug")) {
                ex.printStackTrace(cmd.getErr());
            }
            return 1;
        });
        return cl.execute(args);
    }

    public static void main(String[] args) {
        System.exit(execute(args));
    }
}
