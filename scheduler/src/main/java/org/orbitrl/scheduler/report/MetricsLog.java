package org.orbitrl.scheduler.report;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.io.Writer;
import java.nio.ByteBuffer;
import java.nio.channels.SeekableByteChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * Appends a job's metrics to {@code <job data dir>/metrics.jsonl}, one JSON object per line
 * ({@link MetricsJson} has the format): a line per step, a line per evaluation, and a last line
 * when the job ends. Each line is flushed as it is written, so a job that dies leaves every
 * completed line readable; a resumed job appends to the same file (the report keeps the latest
 * record of a step written twice). Thread-safe.
 */
public final class MetricsLog implements AutoCloseable {

    /** The file name in the job's data folder. */
    public static final String FILE_NAME = "metrics.jsonl";

    private final Path file;
    private final Writer out;

    private MetricsLog(Path file, Writer out) {
        this.file = file;
        this.out = out;
    }

    /**
     * Opens (creating if needed) {@code jobDataDir/metrics.jsonl} for appending. If a previous run
     * died in the middle of a line, a newline is written first so the next record starts clean.
     */
    public static MetricsLog open(Path jobDataDir) throws IOException {
        Files.createDirectories(jobDataDir);
        Path file = jobDataDir.resolve(FILE_NAME);
        boolean unterminated = false;
        if (Files.exists(file) && Files.size(file) > 0) {
            try (SeekableByteChannel ch = Files.newByteChannel(file, StandardOpenOption.READ)) {
                ByteBuffer last = ByteBuffer.allocate(1);
                ch.position(ch.size() - 1).read(last);
                unterminated = last.get(0) != '\n';
            }
        }
        Writer w = Files.newBufferedWriter(file, StandardCharsets.UTF_8, StandardOpenOption.CREATE,
                StandardOpenOption.APPEND, StandardOpenOption.WRITE);
        if (unterminated) {
            w.write('\n');
            w.flush();
        }
        return new MetricsLog(file, w);
    }

    /** The file written. */
    public Path file() {
        return file;
    }

    /** Appends a step line. */
    public void step(StepRecord r) {
        append(MetricsJson.write(r));
    }

    /** Appends an evaluation line. */
    public void eval(EvalRecord r) {
        append(MetricsJson.write(r));
    }

    /** Appends the job's end line. */
    public void end(EndRecord r) {
        append(MetricsJson.write(r));
    }

    private synchronized void append(ObjectNode line) {
        try {
            out.write(MetricsJson.MAPPER.writeValueAsString(line));
            out.write('\n');
            out.flush();
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot encode a metrics line: " + e.getOriginalMessage(), e);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot append to " + file + ": " + e.getMessage(), e);
        }
    }

    @Override
    public synchronized void close() throws IOException {
        out.close();
    }
}
