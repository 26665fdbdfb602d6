package org.orbitrl.model.tokenizer.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Random;
import org.orbitrl.model.tokenizer.IncrementalDecoder;
import org.orbitrl.model.tokenizer.Tokenizer;

/**
 * Tokenizer throughput on one thread, against a peer measured in the same run: UTF-8 encoding of
 * the same text ({@code String.getBytes}), which any tokenizer must at least do.
 *
 * <pre>
 * java -cp ... org.orbitrl.model.tokenizer.bench.TokenizerBench model/src/test/resources/tokenizer/qwen3
 * </pre>
 *
 * Text: the fixture strings plus seeded synthetic English, code, arithmetic and CJK, about 4 MB.
 */
public final class TokenizerBench {
    private TokenizerBench() {
    }

    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args.length > 0 ? args[0] : "model/src/test/resources/tokenizer/qwen3");
        Tokenizer tok = Tokenizer.load(dir.resolve("tokenizer.json"));
        String text = corpus(dir.resolve("cases.json"), 4_000_000);
        long bytes = text.getBytes(StandardCharsets.UTF_8).length;

        int[] ids = tok.encode(text);
        for (int i = 0; i < 2; i++) {
            ids = tok.encode(text); // warm-up: JIT and the per-word cache
        }
        double encodeS = best(3, () -> tok.encode(text));
        // Prompts are short: the same text as 1000-character pieces.
        java.util.List<String> pieces = new java.util.ArrayList<>();
        for (int i = 0; i < text.length(); i += 1000) {
            int end = Math.min(text.length(), i + 1000);
            if (end < text.length() && Character.isHighSurrogate(text.charAt(end - 1))) {
                end++;
            }
            pieces.add(text.substring(i, end));
            i = end - 1000;
        }
        double piecesS = best(3, () -> {
            for (String p : pieces) {
                tok.encode(p);
            }
        });
        final int[] all = ids;
        double decodeS = best(3, () -> tok.decode(all));
        double streamS = best(3, () -> {
            IncrementalDecoder d = tok.incrementalDecoder(false);
            for (int id : all) {
                d.push(id);
            }
            d.finish();
        });
        double utf8S = best(5, () -> text.getBytes(StandardCharsets.UTF_8));

        System.out.printf("text: %.2f MB UTF-8, %d chars, %d tokens (%.2f bytes/token), vocab %d%n", bytes / 1e6,
                text.length(), ids.length, (double) bytes / ids.length, tok.vocabSize());
        System.out.printf("encode:        %7.2f MB/s  %9.0f tokens/s%n", bytes / 1e6 / encodeS, ids.length / encodeS);
        System.out.printf("encode 1000-char pieces: %7.2f MB/s%n", bytes / 1e6 / piecesS);
        System.out.printf("decode:        %7.2f MB/s  %9.0f tokens/s%n", bytes / 1e6 / decodeS, ids.length / decodeS);
        System.out.printf("stream decode: %7.2f MB/s  %9.0f tokens/s  (%.0f ns/token)%n", bytes / 1e6 / streamS,
                ids.length / streamS, streamS * 1e9 / ids.length);
        System.out.printf("peer String.getBytes(UTF_8): %.0f MB/s; encode takes %.0fx its time%n", bytes / 1e6 / utf8S,
                encodeS / utf8S);
    }

    private static double best(int runs, Runnable r) {
        double best = Double.MAX_VALUE;
        for (int i = 0; i < runs; i++) {
            long t0 = System.nanoTime();
            r.run();
            best = Math.min(best, (System.nanoTime() - t0) / 1e9);
        }
        return best;
    }

    /** The fixture strings, then seeded synthetic text, up to about {@code chars} characters. */
    static String corpus(Path cases, int chars) throws Exception {
        StringBuilder out = new StringBuilder(chars + 1000);
        JsonNode root = new ObjectMapper().readTree(cases.toFile());
        for (JsonNode c : root.get("cases")) {
            out.append(c.get("text").asText()).append('\n');
        }
        String[] words = {"the", "model", "reward", "tokens", "expert", "gradient", "def", "return", "(x)", "{", "}",
            "Größe", "naïve", "don't", "it's", "我们", "学习", "日本語", "こんにちは", "😀", "\n", "\t", "    ", "=", "+"};
        Random rng = new Random(42);
        while (out.length() < chars) {
            if (rng.nextInt(10) == 0) {
                int a = rng.nextInt(100000);
                int b = rng.nextInt(100000);
                out.append(a).append('+').append(b).append('=').append(a + b).append('\n');
            } else {
                out.append(words[rng.nextInt(words.length)]).append(rng.nextInt(4) == 0 ? "" : " ");
            }
        }
        return out.toString();
    }
}
