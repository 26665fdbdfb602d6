package org.orbitrl.model.tokenizer.internal;

import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.List;

/**
 * The {@code decoder} of a tokenizer.json: turns token strings back into text. Supported:
 * {@code ByteLevel} (byte-level BPE), {@code ByteFallback} ({@code <0xXX>} tokens), {@code Fuse},
 * {@code Strip}, {@code Replace} with a string pattern, and {@code Sequence} of these; without a
 * decoder, tokens are joined with spaces (as {@code tokenizers} does).
 */
public abstract class TokenDecoder {

    /** One stage: token strings in, token strings out. */
    abstract List<String> decodeChain(List<String> tokens);

    /** The text of {@code tokens}. */
    public final String decode(List<String> tokens) {
        return String.join("", decodeChain(tokens));
    }

    /**
     * True when decoding is "concatenate {@link ByteLevelAlphabet#tokenBytes} of every token, then
     * UTF-8 with replacement", so that a stream can be decoded byte by byte.
     */
    public boolean isByteLevel() {
        return false;
    }

    /** The decoder at {@code node}; when absent, tokens joined with spaces. */
    public static TokenDecoder parse(JsonNodeReader node) {
        if (node == null) {
            return new Joined();
        }
        String type = node.type();
        return switch (type) {
            case "ByteLevel" -> new ByteLevel();
            case "ByteFallback" -> new ByteFallback();
            case "Fuse" -> new Fuse();
            case "Strip" -> new Strip(node.string("content"), node.integer("start"), node.integer("stop"));
            case "Replace" -> {
                JsonNodeReader p = node.object("pattern");
                if (!p.has("String")) {
                    throw p.error("only a {\"String\": ...} pattern is supported in a Replace decoder");
                }
                yield new Replace(p.string("String"), node.string("content"));
            }
            case "Sequence" -> {
                List<TokenDecoder> parts = new ArrayList<>();
                for (JsonNodeReader n : node.array("decoders")) {
                    parts.add(parse(n));
                }
                yield parts.size() == 1 ? parts.get(0) : new Sequence(parts);
            }
            default -> throw node.error("type", "unsupported decoder type '" + type
                    + "' (supported: ByteLevel, ByteFallback, Fuse, Strip, Replace, Sequence)");
        };
    }

    private static final class Joined extends TokenDecoder {
        @Override
        List<String> decodeChain(List<String> tokens) {
            return List.of(String.join(" ", tokens));
        }
    }

    private static final class ByteLevel extends TokenDecoder {
        @Override
        List<String> decodeChain(List<String> tokens) {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            for (String t : tokens) {
                bytes.writeBytes(ByteLevelAlphabet.tokenBytes(t));
            }
            byte[] b = bytes.toByteArray();
            return List.of(Utf8.decodeLossy(b, b.length));
        }

        @Override
        public boolean isByteLevel() {
            return true;
        }
    }

    /** Runs of {@code <0xXX>} tokens become their UTF-8 text, or one U+FFFD per byte if invalid. */
    private static final class ByteFallback extends TokenDecoder {
        @Override
        List<String> decodeChain(List<String> tokens) {
            List<String> out = new ArrayList<>(tokens.size());
            ByteArrayOutputStream run = new ByteArrayOutputStream();
            for (String t : tokens) {
                int b = byteToken(t);
                if (b >= 0) {
                    run.write(b);
                    continue;
                }
                flush(run, out);
                out.add(t);
            }
            flush(run, out);
            return out;
        }

        private static void flush(ByteArrayOutputStream run, List<String> out) {
            if (run.size() == 0) {
                return;
            }
            byte[] b = run.toByteArray();
            out.add(Utf8.isValid(b, b.length) ? Utf8.decodeLossy(b, b.length) : "\uFFFD".repeat(b.length));
            run.reset();
        }

        /** The byte of a {@code <0xXX>} token, or -1. */
        private static int byteToken(String t) {
            if (t.length() != 6 || !t.startsWith("<0x") || t.charAt(5) != '>') {
                return -1;
            }
            int hi = Character.digit(t.charAt(3), 16);
            int lo = Character.digit(t.charAt(4), 16);
            return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
        }
    }

    private static final class Fuse extends TokenDecoder {
        @Override
        List<String> decodeChain(List<String> tokens) {
            return List.of(String.join("", tokens));
        }
    }

    /** Removes up to {@code start} leading and {@code stop} trailing {@code content} characters of each token. */
    private static final class Strip extends TokenDecoder {
        private final String content;
        private final int start;
        private final int stop;

        Strip(String content, int start, int stop) {
            this.content = content;
            this.start = start;
            this.stop = stop;
        }

        @Override
        List<String> decodeChain(List<String> tokens) {
            List<String> out = new ArrayList<>(tokens.size());
            for (String t : tokens) {
                int s = 0;
                int e = t.length();
                for (int k = 0; k < start && t.startsWith(content, s) && s + content.length() <= e; k++) {
                    s += content.length();
                }
                for (int k = 0; k < stop && e - content.length() >= s && t.startsWith(content, e - content.length()); k++) {
                    e -= content.length();
                }
                out.add(t.substring(s, e));
            }
            return out;
        }
    }

    private static final class Replace extends TokenDecoder {
        private final String pattern;
        private final String content;

        Replace(String pattern, String content) {
            this.pattern = pattern;
            this.content = content;
        }

        @Override
        List<String> decodeChain(List<String> tokens) {
            List<String> out = new ArrayList<>(tokens.size());
            for (String t : tokens) {
                out.add(t.replace(pattern, content));
            }
            return out;
        }
    }

    private static final class Sequence extends TokenDecoder {
        private final List<TokenDecoder> parts;

        Sequence(List<TokenDecoder> parts) {
            this.parts = parts;
        }

        @Override
        List<String> decodeChain(List<String> tokens) {
            for (TokenDecoder p : parts) {
                tokens = p.decodeChain(tokens);
            }
            return tokens;
        }
    }
}
