package org.orbitrl.model.tokenizer.internal;

import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * Compiles a pre-tokenizer regex written for Oniguruma, the engine {@code tokenizers} uses, into a
 * {@link java.util.regex.Pattern} that splits text the same way.
 *
 * <p>What carries over unchanged: {@code \p{L}}, {@code \p{N}}, {@code \p{P}} and the other
 * general categories, {@code (?i:...)} groups, lookahead {@code (?!\S)}, possessive quantifiers
 * ({@code ?+}, {@code ++}) and atomic groups, class intersection {@code [a&&[^b]]} and nested
 * classes. The pattern is compiled with {@code UNICODE_CHARACTER_CLASS}, so that {@code \s},
 * {@code \w}, {@code \d} and {@code \b} are Unicode-aware as in Oniguruma on UTF-8 ({@code \s} is
 * the White_Space property: U+00A0, U+3000, U+2003 ... are spaces), with {@code UNICODE_CASE} so
 * that {@code (?i:'s)} also matches {@code 'ſ} (U+017F folds to 's'), and with
 * {@code MULTILINE | UNIX_LINES} because Oniguruma's {@code ^}/{@code $} are line anchors and its
 * only line terminator is '\n'.
 *
 * <p>What is rewritten: {@code \h}/{@code \H} (hex digit in Oniguruma, horizontal space in Java)
 * to {@code [0-9a-fA-F]}; {@code \v} (vertical tab) to {@code \x0B}; {@code \p{^X}} to
 * {@code \P{X}}; script and block names ({@code \p{Han}}) to Java's {@code \p{IsHan}}; a
 * {@code ]} right after {@code [} or {@code [^} (a literal in Oniguruma) to {@code \]}; a
 * {@code {} that does not open a quantifier (a literal in Oniguruma, an error in Java) to
 * {@code \{}; {@code {,n}} to {@code {0,n}}; the inline option {@code m} (dot matches newline in
 * Oniguruma) to Java's {@code s}.
 *
 * <p>Refused with an error naming the construct: {@code \K}, {@code \g<...>} subexpression
 * calls, the absent operator {@code (?~...)}, and anything Java's parser rejects.
 */
public final class OnigurumaRegex {
    private static final int FLAGS = Pattern.UNICODE_CHARACTER_CLASS | Pattern.UNICODE_CASE | Pattern.MULTILINE
            | Pattern.UNIX_LINES;

    private OnigurumaRegex() {
    }

    /** Compiles {@code onig}; errors name the key the pattern was read from. */
    public static Pattern compile(String onig, JsonNodeReader at) {
        String java;
        try {
            java = translate(onig);
        } catch (IllegalArgumentException e) {
            throw at.error("regex " + quote(onig) + ": " + e.getMessage());
        }
        try {
            return Pattern.compile(java, FLAGS);
        } catch (PatternSyntaxException e) {
            throw at.error("regex " + quote(onig) + " does not compile as Java regex " + quote(java) + ": "
                    + e.getDescription());
        }
    }

    /** A pattern matching {@code literal} exactly (a Split with a {@code String} pattern). */
    public static Pattern literal(String literal) {
        return Pattern.compile(Pattern.quote(literal));
    }

    /** The Java regex that behaves as the Oniguruma regex {@code onig}. */
    public static String translate(String onig) {
        StringBuilder out = new StringBuilder(onig.length() + 16);
        int classDepth = 0;
        int i = 0;
        int n = onig.length();
        while (i < n) {
            char c = onig.charAt(i);
            if (c == '\\') {
                if (i + 1 >= n) {
                    throw new IllegalArgumentException("ends with a lone backslash");
                }
                i = escape(onig, i, classDepth > 0, out);
                continue;
            }
            if (c == '[') {
                out.append('[');
                i++;
                classDepth++;
                if (i < n && onig.charAt(i) == '^') {
                    out.append('^');
                    i++;
                }
                if (i < n && onig.charAt(i) == ']') {
                    out.append("\\]");
                    i++;
                }
                continue;
            }
            if (c == ']' && classDepth > 0) {
                classDepth--;
                out.append(']');
                i++;
                continue;
            }
            if (classDepth == 0 && c == '{') {
                i = brace(onig, i, out);
                continue;
            }
            if (classDepth == 0 && c == '(' && i + 1 < n && onig.charAt(i + 1) == '?') {
                i = groupOptions(onig, i, out);
                continue;
            }
            out.append(c);
            i++;
        }
        if (classDepth != 0) {
            throw new IllegalArgumentException("unclosed character class");
        }
        return out.toString();
    }

    private static int escape(String s, int i, boolean inClass, StringBuilder out) {
        char e = s.charAt(i + 1);
        switch (e) {
            case 'h' -> {
                out.append(inClass ? "0-9a-fA-F" : "[0-9a-fA-F]");
                return i + 2;
            }
            case 'H' -> {
                if (inClass) {
                    throw new IllegalArgumentException("\\H inside a character class is not supported");
                }
                out.append("[^0-9a-fA-F]");
                return i + 2;
            }
            case 'v' -> {
                out.append("\\x0B");
                return i + 2;
            }
            case 'K' -> throw new IllegalArgumentException("\\K (keep) is not supported");
            case 'g' -> throw new IllegalArgumentException("\\g subexpression calls are not supported");
            case 'p', 'P' -> {
                return property(s, i, e == 'P', out);
            }
            case 'x' -> {
                if (i + 2 < s.length() && s.charAt(i + 2) == '{') {
                    int close = s.indexOf('}', i + 3);
                    if (close < 0) {
                        throw new IllegalArgumentException("unclosed \\x{");
                    }
                    out.append(s, i, close + 1);
                    return close + 1;
                }
                out.append("\\x");
                return i + 2;
            }
            default -> {
                out.append('\\').append(e);
                return i + 2;
            }
        }
    }

    private static int property(String s, int i, boolean negated, StringBuilder out) {
        if (i + 2 >= s.length() || s.charAt(i + 2) != '{') {
            out.append(s, i, i + 2); // one-letter form such as \pL
            return i + 2;
        }
        int close = s.indexOf('}', i + 3);
        if (close < 0) {
            throw new IllegalArgumentException("unclosed \\p{");
        }
        String name = s.substring(i + 3, close);
        if (name.startsWith("^")) {
            negated = !negated;
            name = name.substring(1);
        }
        out.append(negated ? "\\P{" : "\\p{").append(javaPropertyName(name)).append('}');
        return close + 1;
    }

    private static final java.util.Set<String> POSIX_NAMES = java.util.Set.of("Alpha", "Digit", "Alnum", "Punct",
            "Space", "Upper", "Lower", "XDigit", "Graph", "Print", "Blank", "Cntrl", "ASCII");

    /** General categories and POSIX classes keep their names; scripts take Java's {@code Is} prefix. */
    private static String javaPropertyName(String name) {
        if (name.matches("[A-Z][a-z]?") || POSIX_NAMES.contains(name) || name.startsWith("Is") || name.startsWith("In")
                || name.contains("=")) {
            return name;
        }
        return "Is" + name;
    }

    /** A '{' outside a class: a quantifier if it reads as one, else a literal brace. */
    private static int brace(String s, int i, StringBuilder out) {
        int close = s.indexOf('}', i);
        if (close > 0) {
            String body = s.substring(i + 1, close);
            if (body.matches("\\d+(,\\d*)?")) {
                out.append(s, i, close + 1);
                return close + 1;
            }
            if (body.matches(",\\d+")) {
                out.append("{0").append(body).append('}');
                return close + 1;
            }
        }
        out.append("\\{");
        return i + 1;
    }

    /** {@code (?imx-imx)} and {@code (?imx-imx:}: Oniguruma's 'm' is Java's 's' (dot matches newline). */
    private static int groupOptions(String s, int i, StringBuilder out) {
        int j = i + 2;
        if (j < s.length() && s.charAt(j) == '~') {
            throw new IllegalArgumentException("the absent operator (?~...) is not supported");
        }
        while (j < s.length() && "imx-".indexOf(s.charAt(j)) >= 0) {
            j++;
        }
        if (j > i + 2 && j < s.length() && (s.charAt(j) == ':' || s.charAt(j) == ')')) {
            out.append("(?").append(s.substring(i + 2, j).replace('m', 's'));
            return j;
        }
        out.append("(?");
        return i + 2;
    }

    private static String quote(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n").replace("\r", "\\r") + "\"";
    }
}
