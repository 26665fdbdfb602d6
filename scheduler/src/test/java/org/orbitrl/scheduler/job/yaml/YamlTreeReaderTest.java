package org.orbitrl.scheduler.job.yaml;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Malformed YAML is one problem on one line: what SnakeYAML found, where it found it, and what it was reading. */
class YamlTreeReaderTest {
    private static final YamlTreeReader READER = new YamlTreeReader(YamlTreeReader.Limits.CONFIG);

    private static String problem(String yaml) {
        List<ConfigProblem> problems = new ArrayList<>();
        assertNull(READER.read("job.yaml", yaml.getBytes(StandardCharsets.UTF_8), problems));
        assertEquals(1, problems.size(), problems.toString());
        return problems.getFirst().toString();
    }

    @Test
    void anUnclosedListNamesWhatWasExpectedWhereItWasMissing() {
        String yaml = """
                model: {path: m}
                eval:
                  pass_at_k: [1, 2
                steps: 10
                """;
        assertEquals("job.yaml:4:6: not valid YAML: expected ',' or ']', but got : (while parsing a flow sequence that"
                + " starts at line 3, column 14)", problem(yaml));
    }

    @Test
    void aTabIndentIsReportedAtTheTab() {
        assertEquals("job.yaml:2:1: not valid YAML: found character '\\t(TAB)' that cannot start any token. (Do not use"
                + " \\t(TAB) for indentation) (while scanning for the next token)", problem("model:\n\tpath: m\n"));
    }

    @Test
    void problemsWithoutAContextAndBadCharactersKeepTheirPlace() {
        assertEquals("job.yaml:2:6: not valid YAML: mapping values are not allowed here",
                problem("model: {path: m}\nab: c: d\n"));
        assertEquals("job.yaml:2:10: not valid YAML: special characters are not allowed, found U+0001",
                problem("model: {path: m}\nsteps: 1 \u0001\n"));
    }
}
