package org.orbitrl.scheduler.bench;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.checkpoint.SafetensorsWriter;
import org.orbitrl.scheduler.sft.ByteTokenizerFiles;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;
import java.util.stream.IntStream;

/**
 * A dense Qwen3 model folder with the shape of a released {@code config.json} (Qwen3-4B, say) and
 * random weights generated here, not loaded: uniform with the standard deviation 0.02 that
 * transformers initialises with, norms 1, bf16, each tensor seeded by its name. The tokenizer is
 * Orbit's byte-level one (its end-of-text id replaces the config's), so any task's prompts encode;
 * the model's vocabulary keeps the config's size, so the output layer costs what the real one does.
 *
 * @param config the released config.json, possibly shrunk by {@link #small}
 */
record RandomQwen3(ObjectNode config) {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final double HALF_WIDTH = 0.02 * Math.sqrt(3);  // uniform(-a, a) has std a/sqrt(3)

    static RandomQwen3 read(Path configJson) throws IOException {
        ObjectNode c = (ObjectNode) JSON.readTree(configJson.toFile());
        if (!"qwen3".equals(c.path("model_type").asText())) {
            throw new IllegalArgumentException(configJson + ": model_type " + c.path("model_type")
                    + ", expected qwen3 (a dense Qwen3 such as Qwen3-4B)");
        }
        return new RandomQwen3(c);
    }

    /** The same architecture, shrunk so that an RL step of a small batch runs on two CPU cores in about a second. */
    RandomQwen3 small() {
        ObjectNode c = config.deepCopy();
        c.put("hidden_size", 128);
        c.put("intermediate_size", 384);
        c.put("num_hidden_layers", 2);
        c.put("num_attention_heads", 4);
        c.put("num_key_value_heads", 2);
        c.put("head_dim", 32);
        c.put("vocab_size", 512);
        return new RandomQwen3(c);
    }

    int hidden() {
        return config.get("hidden_size").asInt();
    }

    String shape() {
        return String.format("hidden %d, %d layers, %d/%d heads x %d, MLP %d, vocab %d, %.1fM parameters", hidden(),
                config.get("num_hidden_layers").asInt(), config.get("num_attention_heads").asInt(),
                config.get("num_key_value_heads").asInt(), config.get("head_dim").asInt(),
                config.get("intermediate_size").asInt(), config.get("vocab_size").asInt(), parameters() / 1e6);
    }

    long parameters() {
        long h = hidden();
        long v = config.get("vocab_size").asLong();
        long hd = config.get("head_dim").asLong();
        long q = config.get("num_attention_heads").asLong() * hd;
        long kv = config.get("num_key_value_heads").asLong() * hd;
        long i = config.get("intermediate_size").asLong();
        long layer = h * (q + 2 * kv) + q * h + 3 * h * i + 2 * h + 2 * hd;
        boolean tied = config.path("tie_word_embeddings").asBoolean(false);
        return v * h * (tied ? 1 : 2) + config.get("num_hidden_layers").asLong() * layer + h;
    }

    /** Writes config.json, the byte tokenizer, generation_config.json and model.safetensors into {@code dir}. */
    void write(Path dir, long seed) throws IOException {
        Files.createDirectories(dir);
        ObjectNode c = config.deepCopy();
        c.put("bos_token_id", ByteTokenizerFiles.EOS);
        c.put("eos_token_id", ByteTokenizerFiles.EOS);
        JSON.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("config.json").toFile(), c);
        ObjectNode gen = JSON.createObjectNode();
        gen.put("eos_token_id", ByteTokenizerFiles.EOS);
        JSON.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("generation_config.json").toFile(), gen);
        ByteTokenizerFiles.write(dir);
        int h = hidden();
        int v = c.get("vocab_size").asInt();
        int hd = c.get("head_dim").asInt();
        int q = c.get("num_attention_heads").asInt() * hd;
        int kv = c.get("num_key_value_heads").asInt() * hd;
        int inter = c.get("intermediate_size").asInt();
        SafetensorsWriter out = new SafetensorsWriter().metadata("format", "pt");
        out.add("model.embed_tokens.weight", random("model.embed_tokens.weight", seed, v, h));
        for (int l = 0; l < c.get("num_hidden_layers").asInt(); l++) {
            String p = "model.layers." + l + ".";
            out.add(p + "input_layernorm.weight", ones(h));
            out.add(p + "post_attention_layernorm.weight", ones(h));
            out.add(p + "self_attn.q_proj.weight", random(p + "q", seed, q, h));
            out.add(p + "self_attn.k_proj.weight", random(p + "k", seed, kv, h));
            out.add(p + "self_attn.v_proj.weight", random(p + "v", seed, kv, h));
            out.add(p + "self_attn.o_proj.weight", random(p + "o", seed, h, q));
            out.add(p + "self_attn.q_norm.weight", ones(hd));
            out.add(p + "self_attn.k_norm.weight", ones(hd));
            out.add(p + "mlp.gate_proj.weight", random(p + "gate", seed, inter, h));
            out.add(p + "mlp.up_proj.weight", random(p + "up", seed, inter, h));
            out.add(p + "mlp.down_proj.weight", random(p + "down", seed, h, inter));
        }
        out.add("model.norm.weight", ones(h));
        if (!c.path("tie_word_embeddings").asBoolean(false)) {
            out.add("lm_head.weight", random("lm_head.weight", seed, v, h));
        }
        out.write(dir.resolve("model.safetensors"));
    }

    /** A bf16 [rows, cols] tensor of seeded uniform values, filled in parallel by blocks of rows. */
    private static Tensor random(String name, long seed, int rows, int cols) {
        Tensor t = Tensor.allocate(Arena.ofAuto(), DType.BF16, rows, cols);   // [rows, cols]
        MemorySegment s = t.segment();
        int block = 256;
        long base = seed * 0x9E3779B97F4A7C15L + name.hashCode();
        IntStream.range(0, (rows + block - 1) / block).parallel().forEach(b -> {
            SplittableRandom rnd = new SplittableRandom(base + b);
            long end = Math.min(rows, (long) (b + 1) * block) * cols;
            for (long i = (long) b * block * cols; i < end; i++) {
                float f = (float) ((rnd.nextDouble() * 2 - 1) * HALF_WIDTH);
                s.setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, (short) ((Float.floatToRawIntBits(f) + 0x8000) >>> 16));
            }
        });
        return t;
    }

    private static Tensor ones(int n) {
        return Tensor.allocate(Arena.ofAuto(), DType.F32, n).fill(1f).to(DType.BF16);
    }
}
