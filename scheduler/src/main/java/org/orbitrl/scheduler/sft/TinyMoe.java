package org.orbitrl.scheduler.sft;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.quant.Int4G32;
import org.orbitrl.kernels.quant.QuantizedTensor;
import org.orbitrl.model.checkpoint.SafetensorsWriter;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * A small Qwen3-MoE in the Hugging Face on-disk layout: its {@code config.json}, random
 * initial weights (seeded; normal(0, 0.02) as transformers initialises, norms 1), and the writer
 * of a trained model with its routed experts in compressed-tensors {@code pack-quantized} INT4
 * group-32, the format Kimi-K2.x ships.
 *
 * @param vocab            vocabulary (bytes + specials, rounded up)
 * @param hidden           hidden size
 * @param layers           decoder layers
 * @param heads            attention heads
 * @param kvHeads          key/value heads
 * @param headDim          head dim
 * @param experts          routed experts per layer
 * @param topK             experts per token
 * @param moeIntermediate  expert intermediate size
 * @param maxPositions     longest sequence
 */
public record TinyMoe(int vocab, int hidden, int layers, int heads, int kvHeads, int headDim, int experts, int topK,
                      int moeIntermediate, int maxPositions) {

    public static TinyMoe quickstart() {
        return new TinyMoe(260, 64, 4, 4, 2, 16, 8, 2, 64, 64);
    }

    public ObjectNode config(boolean int4Experts) {
        ObjectMapper om = new ObjectMapper();
        ObjectNode c = om.createObjectNode();
        c.putArray("architectures").add("Qwen3MoeForCausalLM");
        c.put("model_type", "qwen3_moe");
        c.put("vocab_size", vocab);
        c.put("hidden_size", hidden);
        c.put("intermediate_size", moeIntermediate * 2);
        c.put("moe_intermediate_size", moeIntermediate);
        c.put("num_hidden_layers", layers);
        c.put("num_attention_heads", heads);
        c.put("num_key_value_heads", kvHeads);
        c.put("head_dim", headDim);
        c.put("num_experts", experts);
        c.put("num_experts_per_tok", topK);
        c.put("norm_topk_prob", true);
        c.put("decoder_sparse_step", 1);
        c.putArray("mlp_only_layers");
        c.put("hidden_act", "silu");
        c.put("rms_norm_eps", 1e-6);
        c.put("rope_theta", 10000.0);
        c.put("max_position_embeddings", maxPositions);
        c.put("tie_word_embeddings", false);
        c.put("attention_bias", false);
        c.put("bos_token_id", ByteTokenizerFiles.EOS);
        c.put("eos_token_id", ByteTokenizerFiles.EOS);
        c.put("torch_dtype", "bfloat16");
        if (int4Experts) {
            ObjectNode q = c.putObject("quantization_config");
            q.put("quant_method", "compressed-tensors");
            q.put("format", "pack-quantized");
            q.put("quantization_status", "compressed");
            ObjectNode w = q.putObject("config_groups").putObject("group_0");
            w.putArray("targets").add("Linear");
            ObjectNode args = w.putObject("weights");
            args.put("num_bits", 4);
            args.put("type", "int");
            args.put("symmetric", true);
            args.put("group_size", 32);
            args.put("strategy", "group");
            args.put("dynamic", false);
            args.put("observer", "minmax");
            w.putNull("input_activations");
            w.putNull("output_activations");
            ArrayNode ignore = q.putArray("ignore");
            ignore.add("lm_head");
            ignore.add("re:.*self_attn.*");
            ignore.add("re:.*mlp\\.gate$");
        }
        return c;
    }

    /** Seeded random initial weights, f32, by Hugging Face name. */
    public Map<String, Tensor> randomWeights(long seed) {
        SplittableRandom rnd = new SplittableRandom(seed);
        Map<String, Tensor> w = new LinkedHashMap<>();
        w.put("model.embed_tokens.weight", normal(rnd, vocab, hidden));
        for (int i = 0; i < layers; i++) {
            String p = "model.layers." + i + ".";
            w.put(p + "input_layernorm.weight", ones(hidden));
            w.put(p + "post_attention_layernorm.weight", ones(hidden));
            w.put(p + "self_attn.q_proj.weight", normal(rnd, heads * headDim, hidden));
            w.put(p + "self_attn.k_proj.weight", normal(rnd, kvHeads * headDim, hidden));
            w.put(p + "self_attn.v_proj.weight", normal(rnd, kvHeads * headDim, hidden));
            w.put(p + "self_attn.o_proj.weight", normal(rnd, hidden, heads * headDim));
            w.put(p + "self_attn.q_norm.weight", ones(headDim));
            w.put(p + "self_attn.k_norm.weight", ones(headDim));
            w.put(p + "mlp.gate.weight", normal(rnd, experts, hidden));
            for (int e = 0; e < experts; e++) {
                String ep = p + "mlp.experts." + e + ".";
                w.put(ep + "gate_proj.weight", normal(rnd, moeIntermediate, hidden));
                w.put(ep + "up_proj.weight", normal(rnd, moeIntermediate, hidden));
                w.put(ep + "down_proj.weight", normal(rnd, hidden, moeIntermediate));
            }
        }
        w.put("model.norm.weight", ones(hidden));
        w.put("lm_head.weight", normal(rnd, vocab, hidden));
        return w;
    }

    /** True for the weight of a routed expert projection. */
    public static boolean isExpertWeight(String name) {
        return name.contains(".mlp.experts.") && name.endsWith("_proj.weight");
    }

    /**
     * Writes a model directory: config.json, tokenizer files, generation config and
     * model.safetensors (bf16; routed experts INT4 pack-quantized when asked).
     */
    public void write(Path dir, Map<String, Tensor> weights, boolean int4Experts) throws IOException {
        Files.createDirectories(dir);
        ObjectMapper om = new ObjectMapper();
        om.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("config.json").toFile(), config(int4Experts));
        ObjectNode gen = om.createObjectNode();
        gen.put("eos_token_id", ByteTokenizerFiles.EOS);
        gen.put("do_sample", false);
        om.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("generation_config.json").toFile(), gen);
        ByteTokenizerFiles.write(dir);
        SafetensorsWriter out = new SafetensorsWriter().metadata("format", "pt");
        for (var e : weights.entrySet()) {
            String name = e.getKey();
            if (int4Experts && isExpertWeight(name)) {
                String module = name.substring(0, name.length() - ".weight".length());
                QuantizedTensor q = Int4G32.INSTANCE.quantize(e.getValue());
                out.add(module + ".weight_packed", q.codes());
                out.add(module + ".weight_scale", q.scales());
                out.add(module + ".weight_shape", Tensor.ofInts(new int[]{(int) q.rows(), (int) q.cols()}, 2));
            } else {
                out.add(name, e.getValue().to(DType.BF16));
            }
        }
        out.write(dir.resolve("model.safetensors"));
    }

    private static Tensor normal(SplittableRandom rnd, int rows, int cols) {
        float[] v = new float[rows * cols];
        for (int i = 0; i < v.length; i += 2) {   // Box-Muller, two values a draw pair
            double u1 = 1 - rnd.nextDouble();
            double u2 = rnd.nextDouble();
            double r = Math.sqrt(-2 * Math.log(u1)) * 0.02;
            v[i] = (float) (r * Math.cos(2 * Math.PI * u2));
            if (i + 1 < v.length) {
                v[i + 1] = (float) (r * Math.sin(2 * Math.PI * u2));
            }
        }
        return Tensor.of(v, rows, cols);
    }

    private static Tensor ones(int n) {
        return Tensor.allocate(Arena.ofAuto(), DType.F32, n).fill(1f);
    }
}
