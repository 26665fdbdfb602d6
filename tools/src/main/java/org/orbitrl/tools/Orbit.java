package org.orbitrl.tools;

import picocli.CommandLine;
import picocli.CommandLine.Command;

/**
 * {@code tools/orbit}: the one entry point users type. Each subcommand is a small class in this
 * package that delegates to the modules.
 */
@Command(name = "orbit", mixinStandardHelpOptions = true, version = "orbit 0.1.0",
        description = "RL fine-tuning of frozen low-precision MoE models with adapters.",
        subcommands = {
                CommandLine.HelpCommand.class,
                ScoreCommand.class,
                GenerateCommand.class,
                PlanCommand.class,
        })
public final class Orbit implements Runnable {

    @Override
    public void run() {
        new CommandLine(this).usage(System.out);
    }

    /** Runs a command line and returns its exit code; {@link #main} is the only caller of System.exit. */
    public static int execute(String... args) {
        CommandLine cl = new CommandLine(new Orbit());
        cl.setExecutionExceptionHandler((ex, cmd, parsed) -> {
            cmd.getErr().println("orbit " + cmd.getCommandName() + ": " + ex.getMessage());
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
