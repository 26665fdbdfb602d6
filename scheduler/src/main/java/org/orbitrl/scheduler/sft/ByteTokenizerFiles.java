package org.orbitrl.scheduler.sft;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The tokenizer of Orbit's small shipped models: Hugging Face byte-level BPE with no merges, so
 * token id = byte value (0..255), plus special tokens from 256. Written as a standard
 * {@code tokenizer.json} that Hugging Face {@code tokenizers} loads.
 */
public final class ByteTokenizerFiles {
    private ByteTokenizerFiles() {
    }

    public static final List<String> SPECIALS = List.of("<|endoftext|>", "<|im_start|>", "<|im_end|>");

    /** Id of the end-of-text token: generation stops there. */
    public static final int EOS = 256;

    /** GPT-2's printable stand-in for each byte, as ByteLevel pre-tokenizers use. */
    public static String[] byteToUnicode() {
        String[] out = new String[256];
        int n = 0;
        for (int b = 0; b < 256; b++) {
            boolean printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            out[b] = printable ? String.valueOf((char) b) : String.valueOf((char) (256 + n++));
        }
        return out;
    }

    /** Token ids of ASCII/UTF-8 text: its bytes. */
    public static int[] encode(String text) {
        byte[] bytes = text.getBytes(StandardCharsets.UTF_8);
        int[] ids = new int[bytes.length];
        for (int i = 0; i < bytes.length; i++) {
            ids[i] = bytes[i] & 0xFF;
        }
        return ids;
    }

    /** Text of token ids, special tokens skipped. */
    public static String decode(int[] ids) {
        byte[] b = new byte[ids.length];
        int n = 0;
        for (int id : ids) {
            if (id >= 0 && id < 256) {
                b[n++] = (byte) id;
            }
        }
        return new String(b, 0, n, StandardCharsets.UTF_8);
    }

    public static void write(Path dir) throws IOException {
        ObjectMapper om = new ObjectMapper();
        ObjectNode root = om.createObjectNode();
        root.put("version", "1.0");
        root.putNull("truncation");
        root.putNull("padding");
        ArrayNode added = root.putArray("added_tokens");
        for (int i = 0; i < SPECIALS.size(); i++) {
            ObjectNode t = added.addObject();
            t.put("id", EOS + i);
            t.put("content", SPECIALS.get(i));
            t.put("single_word", false);
            t.put("lstrip", false);
            t.put("rstrip", false);
            t.put("normalized", false);
            t.put("special", true);
        }
        root.putNull("normalizer");
        ObjectNode pre = root.putObject("pre_tokenizer");
        pre.put("type", "ByteLevel");
        pre.put("add_prefix_space", false);
        pre.put("trim_offsets", false);
        pre.put("use_regex", false);
        root.putNull("post_processor");
        ObjectNode dec = root.putObject("decoder");
        dec.put("type", "ByteLevel");
        dec.put("add_prefix_space", false);
        dec.put("trim_offsets", false);
        dec.put("use_regex", false);
        ObjectNode model = root.putObject("model");
        model.put("type", "BPE");
        model.putNull("dropout");
        model.putNull("unk_token");
        model.putNull("continuing_subword_prefix");
        model.putNull("end_of_word_suffix");
        model.put("fuse_unk", false);
        model.put("byte_fallback", false);
        model.put("ignore_merges", false);
        ObjectNode vocab = model.putObject("vocab");
        String[] u = byteToUnicode();
        for (int b = 0; b < 256; b++) {
            vocab.put(u[b], b);
        }
        model.putArray("merges");
        om.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("tokenizer.json").toFile(), root);
        ObjectNode cfg = om.createObjectNode();
        cfg.put("eos_token", SPECIALS.get(0));
        cfg.put("pad_token", SPECIALS.get(0));
        cfg.put("model_max_length", 64);
        cfg.put("tokenizer_class", "PreTrainedTokenizerFast");
        om.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("tokenizer_config.json").toFile(), cfg);
    }
}
