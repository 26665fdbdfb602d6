package org.orbitrl.model.tokenizer.internal;

/**
 * UTF-8 decoding with the replacement rules of Rust's {@code String::from_utf8_lossy}, which the
 * {@code tokenizers} decoders use: each maximal subpart of an ill-formed sequence becomes one
 * U+FFFD (Unicode's "substitution of maximal subparts"), and an incomplete sequence at the end
 * becomes one U+FFFD. {@link #incompleteTail} says how many trailing bytes are the valid start of
 * a character still waiting for its continuation bytes, which a streaming decoder holds back.
 */
public final class Utf8 {
    private Utf8() {
    }

    /** Decodes {@code bytes[0, len)}; ill-formed parts become U+FFFD as described above. */
    public static String decodeLossy(byte[] bytes, int len) {
        StringBuilder out = new StringBuilder(len);
        int i = 0;
        while (i < len) {
            int b0 = bytes[i] & 0xFF;
            if (b0 < 0x80) {
                out.append((char) b0);
                i++;
                continue;
            }
            int width = width(b0);
            if (width == 0) {
                out.append('\uFFFD');
                i++;
                continue;
            }
            int valid = validPrefix(bytes, i, len, b0, width);
            if (valid == width) {
                int cp = b0 & (0xFF >> (width + 1));
                for (int k = 1; k < width; k++) {
                    cp = (cp << 6) | (bytes[i + k] & 0x3F);
                }
                out.appendCodePoint(cp);
                i += width;
            } else {
                // A maximal subpart (the lead byte and the continuation bytes that were still
                // possible) or an incomplete sequence at the end: one replacement character.
                out.append('\uFFFD');
                i += valid;
            }
        }
        return out.toString();
    }

    /**
     * The number of bytes at the end of {@code bytes[0, len)} (0 to 3) that form the valid
     * beginning of a character whose remaining bytes have not arrived yet.
     */
    public static int incompleteTail(byte[] bytes, int len) {
        for (int back = 1; back <= 3 && back <= len; back++) {
            int b = bytes[len - back] & 0xFF;
            if (b >= 0x80 && b < 0xC0) {
                continue; // a continuation byte: the lead byte is further back
            }
            int width = width(b);
            if (width <= back) {
                return 0; // ASCII, an invalid lead byte, or a sequence that is already complete
            }
            return validPrefix(bytes, len - back, len, b, width) == back ? back : 0;
        }
        return 0;
    }

    /** True when {@code bytes[0, len)} is well-formed UTF-8. */
    public static boolean isValid(byte[] bytes, int len) {
        int i = 0;
        while (i < len) {
            int b0 = bytes[i] & 0xFF;
            if (b0 < 0x80) {
                i++;
                continue;
            }
            int width = width(b0);
            if (width == 0 || validPrefix(bytes, i, len, b0, width) != width) {
                return false;
            }
            i += width;
        }
        return true;
    }

    /** Bytes of a character led by {@code b0} (2-4), or 0 if {@code b0} cannot start one. */
    private static int width(int b0) {
        if (b0 >= 0xC2 && b0 <= 0xDF) {
            return 2;
        }
        if (b0 >= 0xE0 && b0 <= 0xEF) {
            return 3;
        }
        if (b0 >= 0xF0 && b0 <= 0xF4) {
            return 4;
        }
        return 0;
    }

    /** How many bytes from {@code start} (lead byte included) are a valid prefix of a character. */
    private static int validPrefix(byte[] bytes, int start, int len, int b0, int width) {
        int n = 1;
        while (n < width && start + n < len) {
            int b = bytes[start + n] & 0xFF;
            int lo = 0x80;
            int hi = 0xBF;
            if (n == 1) {
                // Second-byte ranges exclude overlong forms, surrogates and code points past U+10FFFF.
                if (b0 == 0xE0) {
                    lo = 0xA0;
                } else if (b0 == 0xED) {
                    hi = 0x9F;
                } else if (b0 == 0xF0) {
                    lo = 0x90;
                } else if (b0 == 0xF4) {
                    hi = 0x8F;
                }
            }
            if (b < lo || b > hi) {
                break;
            }
            n++;
        }
        return n;
    }
}
