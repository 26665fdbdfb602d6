package org.orbitrl.model.tokenizer.internal;

import java.text.Normalizer;
import java.util.ArrayList;
import java.util.List;
import java.util.function.UnaryOperator;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The {@code normalizer} of a tokenizer.json: Unicode normalization forms (NFC for Qwen3), an empty
 * {@code Sequence} (DeepSeek-V3), lowercase, strip, prepend and replace. Normalization forms come
 * from {@link java.text.Normalizer}, whose Unicode version is newer than the one compiled into
 * {@code tokenizers}; they differ only on characters assigned in the meantime.
 */
public final class Normalizers {
    private Normalizers() {
    }

    /** The normalizer at {@code node}, or the identity when it is absent. */
    public static UnaryOperator<String> parse(JsonNodeReader node) {
        if (node == null) {
            return UnaryOperator.identity();
        }
        String type = node.type();
        return switch (type) {
            case "NFC" -> s -> Normalizer.normalize(s, Normalizer.Form.NFC);
            case "NFD" -> s -> Normalizer.normalize(s, Normalizer.Form.NFD);
            case "NFKC" -> s -> Normalizer.normalize(s, Normalizer.Form.NFKC);
            case "NFKD" -> s -> Normalizer.normalize(s, Normalizer.Form.NFKD);
            case "Lowercase" -> Normalizers::lowercase;
            case "Strip" -> strip(node.bool("strip_left", true), node.bool("strip_right", true));
            case "Prepend" -> {
                String prefix = node.string("prepend");
                yield s -> s.isEmpty() ? s : prefix + s;
            }
            case "Replace" -> replace(node);
            case "Sequence" -> {
                List<UnaryOperator<String>> parts = new ArrayList<>();
                for (JsonNodeReader n : node.array("normalizers")) {
                    parts.add(parse(n));
                }
                yield s -> {
                    for (UnaryOperator<String> p : parts) {
                        s = p.apply(s);
                    }
                    return s;
                };
            }
            default -> throw node.error("type", "unsupported normalizer type '" + type
                    + "' (supported: NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace, Sequence)");
        };
    }

    /** Per-character full lowercase mapping, as Rust's {@code char::to_lowercase} (no final-sigma rule). */
    static String lowercase(String s) {
        StringBuilder out = new StringBuilder(s.length());
        s.codePoints().forEach(cp -> {
            if (cp == 0x130) {
                out.append("i\u0307"); // the one unconditional multi-character lowercase mapping
            } else {
                out.appendCodePoint(Character.toLowerCase(cp));
            }
        });
        return out.toString();
    }

    private static UnaryOperator<String> strip(boolean left, boolean right) {
        return s -> {
            int start = 0;
            int end = s.length();
            while (left && start < end && UnicodeChars.isWhiteSpace(s.codePointAt(start))) {
                start += Character.charCount(s.codePointAt(start));
            }
            while (right && end > start && UnicodeChars.isWhiteSpace(s.codePointBefore(end))) {
                end -= Character.charCount(s.codePointBefore(end));
            }
            return s.substring(start, end);
        };
    }

    private static UnaryOperator<String> replace(JsonNodeReader node) {
        Pattern pattern = pattern(node.object("pattern"));
        String content = Matcher.quoteReplacement(node.string("content"));
        return s -> pattern.matcher(s).replaceAll(content);
    }

    /** A {@code {"String": ...}} or {@code {"Regex": ...}} pattern object. */
    static Pattern pattern(JsonNodeReader p) {
        if (p.has("String")) {
            return OnigurumaRegex.literal(p.string("String"));
        }
        if (p.has("Regex")) {
            return OnigurumaRegex.compile(p.string("Regex"), p.child("Regex"));
        }
        throw p.error("expected {\"String\": ...} or {\"Regex\": ...}");
    }
}
