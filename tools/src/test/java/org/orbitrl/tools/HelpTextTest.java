package org.orbitrl.tools;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/**
 * Every command's and subcommand's {@code --help} of {@code orbit} and {@code orbitctl} renders as written: picocli
 * reads descriptions as format strings, so a bare {@code %} ("3% of the GPU") makes it warn on standard error and print
 * the raw text. Each help is rendered, and the warnings picocli writes meanwhile are collected. {@code --help} after
 * every subcommand prints its usage and exits 0; {@code orbit} alone is a usage error.
 */
class HelpTextTest {

    private static void collect(CommandLine cl, List<CommandLine> out) {
        out.add(cl);
        cl.getSubcommands().values().forEach(c -> collect(c, out));
    }

    @Test
    void everyHelpRendersWithoutFormatWarnings() {
        List<CommandLine> all = new ArrayList<>();
        collect(new CommandLine(new Orbit()), all);
        collect(new CommandLine(new OrbitCtl()), all);
        PrintStream err = System.err;
        ByteArrayOutputStream warnings = new ByteArrayOutputStream();
        StringBuilder helps = new StringBuilder();
        try {
            System.setErr(new PrintStream(warnings, true, StandardCharsets.UTF_8));
            for (CommandLine c : all) {
                helps.append(c.getUsageMessage(CommandLine.Help.Ansi.OFF));
            }
        } finally {
            System.setErr(err);
        }
        String w = warnings.toString(StandardCharsets.UTF_8);
        assertFalse(w.contains("picocli WARN"), w);
        assertTrue(all.size() >= 10, all.size() + " commands");
        String text = helps.toString().replaceAll("\\s+", " ");   // the help wraps its lines
        assertTrue(text.contains("runtime reserve per GPU (default: 2 GiB + 3% of the GPU)"), "orbit plan --reserve's help");
        assertFalse(text.contains("%n"), "a format string printed raw");
        assertTrue(text.contains("teaches it a task partly (--task: sorting lists by default, or addition;"),
                "make-quickstart's description names its default task");
        assertTrue(text.contains("--base-format=<baseFormat> bf16 | int4 | mxfp4 | nvfp4 (default bf16)"), "generate");
    }

    /** The command words of every subcommand below {@code cl}: {@code [score]}, {@code [job]}, ... */
    private static void paths(CommandLine cl, List<String> prefix, List<List<String>> out) {
        cl.getSubcommands().forEach((name, sub) -> {
            List<String> path = new ArrayList<>(prefix);
            path.add(name);
            out.add(path);
            paths(sub, path, out);
        });
    }

    /**
     * {@code --help} after each of {@code tool}'s command paths: what is wrong (an exit code other than 0, no usage
     * line, anything on standard error) into {@code wrong}; each help text, its white space collapsed, by path.
     */
    private static Map<String, String> helps(String tool, List<List<String>> paths,
                                             java.util.function.Function<String[], CommandRun> run, List<String> wrong) {
        Map<String, String> helps = new HashMap<>();
        for (List<String> path : paths) {
            List<String> args = new ArrayList<>(path);
            args.add("--help");
            CommandRun r = run.apply(args.toArray(String[]::new));
            String usage = "Usage: " + tool + " " + String.join(" ", path);
            if (r.code() != 0 || !r.out().contains(usage) || !r.err().isEmpty()) {
                wrong.add(tool + " " + String.join(" ", args) + ": exit " + r.code() + ", " + r.out() + r.err());
            }
            helps.put(String.join(" ", path), r.out().replaceAll("\\s+", " "));
        }
        return helps;
    }

    @Test
    void helpOnEverySubcommandPrintsItsUsageAndExitsZero() {
        List<List<String>> orbit = new ArrayList<>();
        paths(new CommandLine(new Orbit()), List.of(), orbit);
        List<List<String>> orbitctl = new ArrayList<>();
        paths(new CommandLine(new OrbitCtl()), List.of(), orbitctl);
        assertTrue(orbit.size() >= 7 && orbitctl.size() >= 9, orbit + " " + orbitctl);
        List<String> wrong = new ArrayList<>();
        helps("orbit", orbit, CommandRun::orbit, wrong);
        Map<String, String> helps = helps("orbitctl", orbitctl, CommandRun::orbitctl, wrong);
        assertTrue(wrong.isEmpty(), String.join("\n", wrong));
        // What NAME, KEY and VALUE are, and which state each --wait waits for.
        assertTrue(helps.get("job").contains("NAME The job's name: its file name without .yaml (orbitctl jobs lists"
                + " them)."), helps.get("job"));
        assertTrue(helps.get("set").contains("KEY The field: optimizer.lr (or lr), sampling."), helps.get("set"));
        assertTrue(helps.get("set").contains("async.staleness_bound (staleness_bound), eval.interval (eval_interval)."
                + " VALUE Its new value, checked as in a job file (lr 2e-5, temperature 0.7)."), helps.get("set"));
        assertTrue(helps.get("pause").contains("--wait Wait (up to 10 minutes) until the job is paused, or has"
                + " completed, stopped or failed; exit code 1 if it has not by then."), helps.get("pause"));
        assertTrue(helps.get("resume").contains("--wait Wait (up to 10 minutes) until the job is running, or queued"
                + " again (queued, planning, loading), or has completed or failed;"), helps.get("resume"));
        assertTrue(helps.get("stop").contains("--wait Wait (up to 10 minutes) until the job is stopped, or has"
                + " completed or failed;"), helps.get("stop"));
    }

    @Test
    void orbitWithoutACommandIsAUsageError() {
        CommandRun r = CommandRun.orbit();
        assertEquals(2, r.code());
        assertEquals("", r.out());
        assertTrue(r.err().startsWith("Missing required subcommand" + System.lineSeparator() + "Usage: orbit [-hV] [COMMAND]"),
                r.err());
    }
}
