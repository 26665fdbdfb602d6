package org.orbitrl.daemon.config;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.fail;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.orbitrl.scheduler.job.yaml.ConfigException;
import org.orbitrl.scheduler.job.yaml.ConfigProblem;

/**
 * A damaged daemon configuration: every edit of the shipped {@code conf/orbit.yaml} either parses or is refused with
 * problems that name the file; no other exception escapes (the daemon prints the problems and exits 2 on them).
 */
class OrbitConfigFuzzTest {
    /** Values an edit puts in place of a value: wrong types, out of range, odd YAML. */
    private static final String[] VALUES = {
        "-1", "0", "1e400", "-1e400", ".nan", ".inf", "2147483648", "99999999999999999999", "''", "\"\"", "[]", "{}",
        "[1, 2]", "{a: 1}", "null", "~", "true", "abc", "0x10", "1.5", "&a 1", "*a", "!!binary AAAA", "|\n  x",
        "[[]]", "- 1", "\"\\u0000\"", "3:4", "-0", "1_000",
    };

    @Test
    void everyEditOfTheShippedFileEitherParsesOrNamesItsProblems() throws Exception {
        List<String> lines = Files.readAllLines(OrbitConfigTest.CONF, StandardCharsets.UTF_8);
        List<Integer> valueLines = new ArrayList<>();
        for (int i = 0; i < lines.size(); i++) {
            String t = lines.get(i).strip();
            if (!t.startsWith("#") && t.contains(": ") && !t.endsWith(":")) {
                valueLines.add(i);
            }
        }
        assertFalse(valueLines.size() < 10, "expected the shipped file to set many keys, found " + valueLines.size());
        SplittableRandom rnd = new SplittableRandom(20261204L);
        int parsed = 0;
        int refused = 0;
        for (int trial = 0; trial < 3000; trial++) {
            List<String> edited = new ArrayList<>(lines);
            int edits = 1 + rnd.nextInt(3);
            for (int e = 0; e < edits; e++) {
                int at = valueLines.get(rnd.nextInt(valueLines.size()));
                String line = edited.get(at);
                int colon = line.indexOf(": ");
                if (colon < 0) {
                    continue;   // cut short by an earlier edit
                }
                edited.set(at, switch (rnd.nextInt(4)) {
                    case 0 -> line.substring(0, colon + 2) + VALUES[rnd.nextInt(VALUES.length)];
                    case 1 -> line.substring(0, rnd.nextInt(line.length() + 1));          // cut short
                    case 2 -> " " + line;                                                // indentation broken
                    default -> line.substring(0, colon) + "x: " + line.substring(colon + 2); // unknown key
                });
            }
            byte[] bytes = String.join("\n", edited).getBytes(StandardCharsets.UTF_8);
            try {
                OrbitConfig.parse("edited.yaml", bytes, OrbitConfigTest.CONF.getParent());
                parsed++;
            } catch (ConfigException e) {
                refused++;
                for (ConfigProblem p : e.problems()) {
                    assertEquals("edited.yaml", p.source(), p.toString());
                    assertFalse(p.message().isBlank(), p.toString());
                }
            } catch (RuntimeException e) {
                fail("edit " + trial + " threw " + e + " instead of naming the problem; file:\n"
                        + new String(bytes, StandardCharsets.UTF_8), e);
            }
        }
        // Both outcomes occur, so the edits reach the checks and do not all break the YAML.
        assertFalse(parsed < 50, "parsed " + parsed);
        assertFalse(refused < 500, "refused " + refused);
    }
}
