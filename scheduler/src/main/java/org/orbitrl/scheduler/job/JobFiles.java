package org.orbitrl.scheduler.job;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLGenerator;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import org.orbitrl.scheduler.job.yaml.ConfigException;
import org.orbitrl.scheduler.job.yaml.ConfigProblem;
import org.orbitrl.scheduler.job.yaml.Section;
import org.orbitrl.scheduler.job.yaml.YamlNode;
import org.orbitrl.scheduler.job.yaml.YamlTreeReader;

/**
 * Reads and writes job files. Reading is strict: unknown keys, wrong types, missing units and
 * out-of-range values are all reported at once, each with file, line, column and key
 * ({@link ConfigException}). Relative paths in a job file resolve against its folder.
 */
public final class JobFiles {
    private static final YamlTreeReader YAML = new YamlTreeReader(YamlTreeReader.Limits.CONFIG);
    private static final ObjectMapper WRITER = new ObjectMapper(YAMLFactory.builder()
            .disable(YAMLGenerator.Feature.WRITE_DOC_START_MARKER)
            .enable(YAMLGenerator.Feature.MINIMIZE_QUOTES)
            .enable(YAMLGenerator.Feature.INDENT_ARRAYS_WITH_INDICATOR)
            .build());

    private JobFiles() {
    }

    /** Whether a folder entry is a job file: {@code *.yaml} or {@code *.yml}, not hidden, not an editor's backup. */
    public static boolean isJobFile(Path file) {
        String n = file.getFileName().toString();
        return !n.startsWith(".") && !n.startsWith("#") && (n.endsWith(".yaml") || n.endsWith(".yml"));
    }

    /** The job name a file gives: its name without {@code .yaml}/{@code .yml}. */
    public static String nameOf(Path file) {
        String n = file.getFileName().toString();
        return n.substring(0, n.lastIndexOf('.'));
    }

    /** Reads and validates a job file. */
    public static JobSpec read(Path file) throws IOException, ConfigException {
        Path abs = file.toAbsolutePath();
        return parse(abs.toString(), Files.readAllBytes(abs), nameOf(abs), abs.getParent());
    }

    /**
     * Parses and validates job-file content.
     *
     * @param source  what problems call the text (the file path)
     * @param content the file's bytes
     * @param name    the job's name
     * @param baseDir the folder relative paths resolve against
     */
    public static JobSpec parse(String source, byte[] content, String name, Path baseDir) throws ConfigException {
        List<ConfigProblem> problems = new ArrayList<>();
        YamlNode root = YAML.read(source, content, problems);
        if (root == null && problems.isEmpty()) {
            problems.add(new ConfigProblem(source, 0, 0, "", "empty job file; a job needs at least model.path"
                    + " (see conf/jobs.d/example.yaml for every key)"));
        }
        JobSpec spec = null;
        if (problems.isEmpty()) {
            boolean named = JobSpec.NAME.matcher(name).matches();
            if (!named) {
                problems.add(new ConfigProblem(source, 0, 0, "", "the file name gives the job name '" + name
                        + "': use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"));
            }
            // A bad name is the file name's problem, reported once above; the content is still checked in full,
            // under a stand-in name (the job is refused either way).
            spec = JobSpec.read(Section.root(source, root, problems), named ? name : "job", baseDir);
        }
        if (!problems.isEmpty()) {
            problems.sort(Comparator.comparingInt(ConfigProblem::line).thenComparingInt(ConfigProblem::column));
            throw new ConfigException(problems);
        }
        if (spec == null) {
            throw new IllegalStateException(source + ": no job and no problem reported");
        }
        return spec;
    }

    /** The job as a canonical YAML document (every key, file order, defaults included); reads back equal. */
    public static String toYaml(JobSpec spec) {
        try {
            return WRITER.writeValueAsString(SpecTree.tree(spec, "name"));
        } catch (JsonProcessingException e) {
            throw new UncheckedIOException(e);
        }
    }
}
