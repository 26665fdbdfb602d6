package org.orbitrl.model.tokenizer.internal;

import java.nio.charset.StandardCharsets;

/**
 * GPT-2's reversible map between the 256 byte values and 256 printable characters, which byte-level
 * BPE vocabularies are written in: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * (controls, space, 0x7F-0xA0, 0xAD) for U+0100 onwards in byte order. A space is thus 'Ġ' (U+0120)
 * and a newline 'Ċ' (U+010A).
 */
public final class ByteLevelAlphabet {
    /** byte value -> character. */
    private static final char[] BYTE_TO_CHAR = new char[256];
    /** character -> byte value, -1 where the character stands for no byte. */
    private static final short[] CHAR_TO_BYTE = new short[0x144];

    static {
        java.util.Arrays.fill(CHAR_TO_BYTE, (short) -1);
        int next = 256;
        for (int b = 0; b < 256; b++) {
            boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            char c = (char) (printable ? b : next++);
            BYTE_TO_CHAR[b] = c;
            CHAR_TO_BYTE[c] = (short) b;
        }
    }

    private ByteLevelAlphabet() {
    }

    /** The UTF-8 bytes of {@code text}, each written as its alphabet character. */
    public static String encode(String text) {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        char[] out = new char[bytes.length];
        for (int i = 0; i < bytes.length; i++) {
            out[i] = BYTE_TO_CHAR[bytes[i] & 0xFF];
        }
        return new String(out);
    }

    /** The byte a character stands for, or -1. */
    public static int byteOf(char c) {
        return c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c] : -1;
    }

    /**
     * The bytes a token stands for, as {@code tokenizers}' ByteLevel decoder reads it: the byte of
     * each character when every character is in the alphabet, else the token's own UTF-8 bytes
     * (added tokens such as {@code <｜User｜>} or {@code "new york"} are not written in it).
     */
    public static byte[] tokenBytes(String token) {
        byte[] out = new byte[token.length()];
        for (int i = 0; i < token.length(); i++) {
            int b = byteOf(token.charAt(i));
            if (b < 0) {
                return token.getBytes(StandardCharsets.UTF_8);
            }
            out[i] = (byte) b;
        }
        return out;
    }
}
