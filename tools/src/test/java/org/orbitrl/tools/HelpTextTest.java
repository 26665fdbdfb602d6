package org.orbitrl.tools;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/**
 * Every command's and subcommand's {@code --help} of {@code orbit} and {@code orbitctl} renders as written: picocli
 * reads descriptions as format strings, so a bare {@code %} ("3% of the GPU") makes it warn on standard error and print
 * the raw text. Each help is rendered, and the warnings picocli writes meanwhile are collected.
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
    }
}
