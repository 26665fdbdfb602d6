package org.orbitrl.scheduler.job.yaml;

import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLParser;
import java.io.IOException;
import java.io.StringReader;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.yaml.snakeyaml.LoaderOptions;
import org.yaml.snakeyaml.error.Mark;
import org.yaml.snakeyaml.error.MarkedYAMLException;
import org.yaml.snakeyaml.reader.ReaderException;

/**
 * Parses YAML text into a {@link YamlNode} tree with positions, under limits that make a
 * hostile file cheap to reject: size, nesting depth, list length, string length and aliases.
 * Duplicate keys, several documents, non-UTF-8 bytes and malformed YAML are problems with
 * the line and column where they were found.
 */
public final class YamlTreeReader {
    /** Limits on what a configuration file may contain. */
    public record Limits(int maxBytes, int maxDepth, int maxListLength, int maxStringLength) {
        /** Generous for any real configuration, tiny for a machine. */
        public static final Limits CONFIG = new Limits(1 << 20, 16, 4096, 16 * 1024);

        public Limits {
            if (maxBytes <= 0 || maxDepth <= 0 || maxListLength <= 0 || maxStringLength <= 0) {
                throw new IllegalArgumentException("limits must be positive: " + maxBytes + ", " + maxDepth
                        + ", " + maxListLength + ", " + maxStringLength);
            }
        }
    }

    private final Limits limits;
    private final YAMLFactory factory;

    public YamlTreeReader(Limits limits) {
        this.limits = limits;
        LoaderOptions loader = new LoaderOptions();
        loader.setAllowDuplicateKeys(true); // reported by this reader, with both positions
        loader.setMaxAliasesForCollections(8);
        loader.setNestingDepthLimit(limits.maxDepth() + 2);
        loader.setCodePointLimit(limits.maxBytes());
        this.factory = YAMLFactory.builder()
                .loaderOptions(loader)
                .enable(YAMLParser.Feature.EMPTY_STRING_AS_NULL) // "key:" has no value; key: "" is empty text
                .streamReadConstraints(StreamReadConstraints.builder()
                        .maxStringLength(limits.maxStringLength())
                        .maxNestingDepth(limits.maxDepth() + 2)
                        .maxNumberLength(64)
                        .build())
                .build();
    }

    /**
     * Parses one YAML document. Returns {@code null} for an empty document (no content, or
     * only comments), and adds a problem and returns {@code null} when the text is not a valid
     * document.
     *
     * @param source   what to call the text in problems (usually the file path)
     * @param bytes    the raw file content; must be UTF-8
     * @param problems where problems are added
     */
    public YamlNode read(String source, byte[] bytes, List<ConfigProblem> problems) {
        if (bytes.length > limits.maxBytes()) {
            problems.add(new ConfigProblem(source, 0, 0, "", "file is " + bytes.length
                    + " bytes, more than the limit of " + limits.maxBytes() + " bytes for a configuration file"));
            return null;
        }
        String text;
        try {
            CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT);
            text = decoder.decode(ByteBuffer.wrap(bytes)).toString();
        } catch (CharacterCodingException e) {
            int offset = firstInvalidUtf8(bytes);
            problems.add(new ConfigProblem(source, lineOf(bytes, offset), 0, "",
                    "not UTF-8 text: invalid byte 0x" + String.format("%02x", bytes[offset] & 0xff)
                            + " at byte offset " + offset));
            return null;
        }
        try (JsonParser p = factory.createParser(new StringReader(text))) {
            JsonToken first = p.nextToken();
            if (first == null) {
                return null;
            }
            YamlNode root = readValue(p, first, 1, source, problems);
            JsonToken next = p.nextToken();
            if (next != null) {
                JsonLocation at = p.currentTokenLocation();
                problems.add(new ConfigProblem(source, at.getLineNr(), at.getColumnNr(), "",
                        "more than one YAML document; a configuration file holds exactly one"));
                return null;
            }
            return root;
        } catch (TooDeep e) {
            problems.add(e.problem);
            return null;
        } catch (IOException | RuntimeException e) {
            // SnakeYAML reports some malformed input (control characters, broken escapes) as
            // unchecked exceptions from inside the scanner; they are problems of the file too.
            problems.add(syntaxProblem(source, text, e));
            return null;
        }
    }

    /**
     * A syntax error as one line, at the place SnakeYAML found the problem: {@code expected ',' or ']', but got :
     * (while parsing a flow sequence that starts at line 4, column 9)}. SnakeYAML's own message puts the context
     * first and spreads both over several lines with excerpts of the file; Jackson's location is where its last
     * token began, not where the problem is.
     */
    private static ConfigProblem syntaxProblem(String source, String text, Exception e) {
        for (Throwable c = e; c != null; c = c.getCause()) {
            if (c instanceof MarkedYAMLException m && (m.getProblem() != null || m.getContext() != null)) {
                Mark at = m.getProblemMark() != null ? m.getProblemMark() : m.getContextMark();
                String problem = m.getProblem() != null ? m.getProblem() : m.getContext();
                StringBuilder message = new StringBuilder("not valid YAML: ").append(oneLine(problem));
                if (m.getProblem() != null && m.getContext() != null) {
                    message.append(" (").append(oneLine(m.getContext()));
                    Mark from = m.getContextMark();
                    if (from != null && (at == null || from.getLine() != at.getLine() || from.getColumn() != at.getColumn())) {
                        message.append(" that starts at line ").append(from.getLine() + 1)
                                .append(", column ").append(from.getColumn() + 1);
                    }
                    message.append(')');
                }
                return new ConfigProblem(source, at == null ? 0 : at.getLine() + 1, at == null ? 0 : at.getColumn() + 1,
                        "", message.toString());
            }
            if (c instanceof ReaderException r) {
                int[] at = lineAndColumn(text, r.getPosition());
                return new ConfigProblem(source, at[0], at[1], "", "not valid YAML: " + oneLine(r.getMessage())
                        + ", found " + String.format("U+%04X", r.getCodePoint()));
            }
        }
        JsonLocation at = e instanceof JsonProcessingException j ? j.getLocation() : null;
        String message = e instanceof JsonProcessingException j ? j.getOriginalMessage() : e.getMessage();
        return new ConfigProblem(source, at == null ? 0 : at.getLineNr(), at == null ? 0 : at.getColumnNr(), "",
                "not valid YAML: " + oneLine(String.valueOf(message)));
    }

    /** SnakeYAML's phrase without its line breaks and closing period. */
    private static String oneLine(String s) {
        String t = s.strip().replaceAll("\\s*\\n\\s*", " ");
        return t.endsWith(".") ? t.substring(0, t.length() - 1) : t;
    }

    /** 1-based line and column of a code point index into the text. */
    private static int[] lineAndColumn(String text, int codePointIndex) {
        int line = 1;
        int column = 1;
        int i = 0;
        for (int n = 0; n < codePointIndex && i < text.length(); n++) {
            int cp = text.codePointAt(i);
            i += Character.charCount(cp);
            if (cp == '\n') {
                line++;
                column = 1;
            } else {
                column++;
            }
        }
        return new int[] {line, column};
    }

    private YamlNode readValue(JsonParser p, JsonToken t, int depth, String source, List<ConfigProblem> problems)
            throws IOException {
        JsonLocation at = p.currentTokenLocation();
        int line = at.getLineNr();
        int col = at.getColumnNr();
        if (depth > limits.maxDepth()) {
            throw new TooDeep(new ConfigProblem(source, line, col, "", "nested more than " + limits.maxDepth()
                    + " levels deep; configuration files are shallow"));
        }
        switch (t) {
            case START_OBJECT -> {
                Map<String, YamlNode.Entry> entries = new LinkedHashMap<>();
                JsonToken k;
                while ((k = p.nextToken()) == JsonToken.FIELD_NAME) {
                    JsonLocation kat = p.currentTokenLocation();
                    String key = p.currentName();
                    JsonToken v = p.nextToken();
                    YamlNode value = readValue(p, v, depth + 1, source, problems);
                    YamlNode.Entry previous = entries.get(key);
                    if (previous != null) {
                        problems.add(new ConfigProblem(source, kat.getLineNr(), kat.getColumnNr(), key,
                                "duplicate key (first written at line " + previous.line() + ")"));
                    } else {
                        entries.put(key, new YamlNode.Entry(key, kat.getLineNr(), kat.getColumnNr(), value));
                    }
                }
                if (k != JsonToken.END_OBJECT) {
                    throw new IllegalStateException("YAML parser gave " + k + " inside a map");
                }
                return new YamlNode.Mapping(entries, line, col);
            }
            case START_ARRAY -> {
                List<YamlNode> items = new ArrayList<>();
                JsonToken i;
                while ((i = p.nextToken()) != JsonToken.END_ARRAY) {
                    if (i == null) {
                        throw new IllegalStateException("YAML parser ended inside a list");
                    }
                    if (items.size() == limits.maxListLength()) {
                        throw new TooDeep(new ConfigProblem(source, line, col, "", "list longer than "
                                + limits.maxListLength() + " items"));
                    }
                    items.add(readValue(p, i, depth + 1, source, problems));
                }
                return new YamlNode.Sequence(items, line, col);
            }
            case VALUE_NULL -> {
                return new YamlNode.Scalar("", true, line, col);
            }
            case VALUE_STRING, VALUE_NUMBER_INT, VALUE_NUMBER_FLOAT, VALUE_TRUE, VALUE_FALSE -> {
                String text = p.getText();
                if (text.length() > limits.maxStringLength()) {
                    throw new TooDeep(new ConfigProblem(source, line, col, "", "a value of " + text.length()
                            + " characters, more than the limit of " + limits.maxStringLength()));
                }
                return new YamlNode.Scalar(text, false, line, col);
            }
            default -> throw new TooDeep(new ConfigProblem(source, line, col, "",
                    "unsupported YAML value (" + t + "); use plain scalars, lists and maps"));
        }
    }

    private static int firstInvalidUtf8(byte[] b) {
        CharsetDecoder d = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT);
        int lo = 0;
        int hi = b.length;
        // Binary search for the shortest prefix that fails to decode (prefix cut inside a
        // multi-byte character counts as valid: decode with endOfInput=false).
        while (hi - lo > 1) {
            int mid = (lo + hi) >>> 1;
            d.reset();
            var r = d.decode(ByteBuffer.wrap(b, 0, mid), java.nio.CharBuffer.allocate(mid + 1), false);
            if (r.isError()) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        return Math.min(lo, b.length - 1);
    }

    private static int lineOf(byte[] b, int offset) {
        int line = 1;
        for (int i = 0; i < offset && i < b.length; i++) {
            if (b[i] == '\n') {
                line++;
            }
        }
        return line;
    }

    /** A hard limit was hit; parsing stops and the one problem is reported. */
    private static final class TooDeep extends RuntimeException {
        private final transient ConfigProblem problem;

        TooDeep(ConfigProblem problem) {
            super(problem.message(), null, false, false);
            this.problem = problem;
        }
    }
}
