package org.orbitrl.scheduler.loop;

import org.orbitrl.model.spec.ModelSpec;

import java.io.IOException;
import java.nio.file.Path;

/** A Hugging Face tokenizer.json with merges. */
final class HfTextCodec {
    private HfTextCodec() {
    }

    static TextCodec load(Path tokenizerJson, ModelSpec spec) throws IOException {
        throw new IOException(tokenizerJson + ": byte-level BPE with merges is read by the tokenizer module, "
                + "which this build does not include yet");
    }
}
