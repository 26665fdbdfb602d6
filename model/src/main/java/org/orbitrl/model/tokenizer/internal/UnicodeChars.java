package org.orbitrl.model.tokenizer.internal;

/** Character classes as Rust's {@code char} methods define them, which {@code tokenizers} uses. */
public final class UnicodeChars {
    private UnicodeChars() {
    }

    /** Rust {@code char::is_whitespace}: the Unicode White_Space property. */
    public static boolean isWhiteSpace(int cp) {
        return switch (cp) {
            case '\t', '\n', 0x0B, '\f', '\r', ' ', 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000 -> true;
            default -> cp >= 0x2000 && cp <= 0x200A;
        };
    }

    /** Rust {@code char::is_numeric}: general categories Nd, Nl and No. */
    public static boolean isNumeric(int cp) {
        int t = Character.getType(cp);
        return t == Character.DECIMAL_DIGIT_NUMBER || t == Character.LETTER_NUMBER || t == Character.OTHER_NUMBER;
    }

    /** A word character for single-word added tokens: Rust {@code is_alphanumeric} or '_'. */
    public static boolean isWordChar(int cp) {
        return cp == '_' || Character.isAlphabetic(cp) || isNumeric(cp);
    }
}
