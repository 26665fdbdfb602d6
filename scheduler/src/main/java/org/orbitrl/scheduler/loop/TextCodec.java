package org.orbitrl.scheduler.loop;

import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.scheduler.sft.ByteTokenizerFiles;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/** Text to token ids and back, for prompts, rewards and stop strings. */
interface TextCodec {
    int[] encode(String text);

    String decode(int[] ids);

    /** Token ids that end a response (the model's end-of-text ids). */
    List<Integer> stopTokens();

    /**
     * The codec of the model in {@code dir}: Orbit's byte-level tokenizer when the
     * model ships it (no merges), else its Hugging Face byte-level BPE ({@link HfTextCodec}).
     */
    static TextCodec forModel(Path dir, ModelSpec spec) throws IOException {
        Path tok = dir.resolve("tokenizer.json");
        if (!Files.isRegularFile(tok)) {
            throw new IOException(dir + ": no tokenizer.json");
        }
        String text = Files.readString(tok);
        if (!text.contains("\"merges\": [ ]") && !text.contains("\"merges\":[]") && !text.contains("\"merges\" : [ ]")) {
            return HfTextCodec.load(tok, spec);
        }
        List<Integer> eos = spec.eosTokenIds().isEmpty() ? List.of(ByteTokenizerFiles.EOS) : spec.eosTokenIds();
        return new TextCodec() {
            @Override
            public int[] encode(String s) {
                return ByteTokenizerFiles.encode(s);
            }

            @Override
            public String decode(int[] ids) {
                return ByteTokenizerFiles.decode(ids);
            }

            @Override
            public List<Integer> stopTokens() {
                return eos;
            }
        };
    }
}
