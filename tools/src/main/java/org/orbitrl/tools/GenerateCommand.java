package org.orbitrl.tools;

import com.fasterxml.jackson.databind.ObjectMapper;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.BaseFormat;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.scheduler.rollout.Sampler;
import org.orbitrl.scheduler.rollout.SamplingParams;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;

/** {@code orbit generate}: continue a prompt of token ids through the KV cache. */
@Command(name = "generate", mixinStandardHelpOptions = true,
        description = "Generates tokens after --prompt-ids; the last line printed is the generated ids, space-separated.")
final class GenerateCommand implements Callable<Integer> {

    @Option(names = "--model", required = true, description = "Hugging Face model directory")
    Path model;

    @Option(names = "--prompt-ids", required = true, split = ",", description = "prompt token ids, comma-separated")
    int[] promptIds;

    @Option(names = "--max-new-tokens", required = true, description = "tokens to generate")
    int maxNewTokens;

    @Option(names = "--greedy", description = "argmax decoding (the default unless --temperature is given)")
    boolean greedy;

    @Option(names = "--temperature", defaultValue = "0", description = "sampling temperature (default ${DEFAULT-VALUE}: greedy)")
    float temperature;

    @Option(names = "--top-p", defaultValue = "1", description = "nucleus sampling mass, greater than 0 and at most 1"
            + " (default ${DEFAULT-VALUE}: off)")
    float topP;

    @Option(names = "--seed", defaultValue = "0", description = "random seed of the sampler (default ${DEFAULT-VALUE})")
    long seed;

    @Option(names = "--stop-id", split = ",", description = "stop after emitting one of these ids")
    int[] stopIds;

    @Option(names = "--adapter", description = "PEFT adapter directory to apply")
    Path adapter;

    @Option(names = "--base-format", defaultValue = "bf16", description = "bf16 | int4 | mxfp4 | nvfp4 (default ${DEFAULT-VALUE})")
    String baseFormat;

    @Option(names = "--backend", defaultValue = "cpu", description = "cpu | scalar | cuda | cuda:N (default ${DEFAULT-VALUE})")
    String backend;

    @Option(names = "--json", description = "print one JSON object (ids, log-probs, finish reason) instead")
    boolean json;

    @Override
    public Integer call() throws Exception {
        if (greedy && temperature != 0) {
            throw new IllegalArgumentException("--greedy and --temperature " + temperature + " contradict each other");
        }
        if (maxNewTokens < 1) {
            throw new IllegalArgumentException("--max-new-tokens must be at least 1, got " + maxNewTokens);
        }
        if (!(temperature >= 0) || Float.isInfinite(temperature)) {
            throw new IllegalArgumentException("--temperature must be 0 (greedy) or more, got " + temperature);
        }
        if (!(topP > 0 && topP <= 1)) {
            throw new IllegalArgumentException("--top-p must be greater than 0 and at most 1, got " + topP);
        }
        BaseFormat format;
        try {
            format = BaseFormat.parse(baseFormat);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("--base-format: " + e.getMessage(), e);
        }
        SamplingParams params = new SamplingParams(temperature, topP, 0, 0, maxNewTokens,
                stopIds == null ? List.of() : Arrays.stream(stopIds).boxed().toList(), List.of(), seed);
        try (org.orbitrl.kernels.Backend be = Backends.named(backend);
             LoadedModel lm = LoadedModel.load(model, be, format)) {
            if (adapter != null) {
                lm.loadAdapter(adapter);
            }
            CausalLM m = lm.model();
            for (int id : promptIds) {
                if (id < 0 || id >= m.vocabSize()) {
                    throw new IllegalArgumentException("--prompt-ids: " + id + " is outside the vocabulary [0, " + m.vocabSize() + ")");
                }
            }
            int positions = lm.spec().maxPositionEmbeddings();
            long fed = (long) promptIds.length + maxNewTokens - 1;   // the prompt, then each new token but the last
            if (fed > positions) {
                throw new IllegalArgumentException("--prompt-ids (" + promptIds.length + " ids) and --max-new-tokens "
                        + maxNewTokens + " need " + fed + " positions; " + configOf(lm)
                        + " allows max_position_embeddings " + positions + " (at most "
                        + Math.max(0, positions + 1 - promptIds.length) + " new tokens after this prompt)");
            }
            KvCache cache = m.newCache(promptIds.length + maxNewTokens);
            SplittableRandom rng = new SplittableRandom(seed);
            List<Integer> out = new ArrayList<>();
            List<Float> logprobs = new ArrayList<>();
            String finish = "length";
            int[] next = promptIds;
            long start = System.nanoTime();
            while (out.size() < maxNewTokens) {
                Tensor logits = m.forwardLast(List.of(new CausalLM.Segment(next, cache)));   // [1, vocab]: the last token's
                float[] last = be.allocator().toFloats(logits);
                be.allocator().release(logits);
                Sampler.Draw d = Sampler.sample(last, params, rng);
                out.add(d.token());
                logprobs.add(d.policyLogprob());
                if (params.stopTokenIds().contains(d.token())) {
                    finish = "stop";
                    break;
                }
                next = new int[]{d.token()};
            }
            cache.close();
            double seconds = (System.nanoTime() - start) / 1e9;
            if (json) {
                Map<String, Object> o = new LinkedHashMap<>();
                o.put("prompt_ids", promptIds);
                o.put("generated_ids", out);
                o.put("logprobs", logprobs);
                o.put("finish_reason", finish);
                o.put("seconds", seconds);
                System.out.println(new ObjectMapper().writeValueAsString(o));
            } else {
                System.out.println(out.stream().map(String::valueOf).reduce((a, b) -> a + " " + b).orElse(""));
            }
            return 0;
        }
    }

    /** The file a loaded model's {@code max_position_embeddings} came from, for messages. */
    static Object configOf(LoadedModel lm) {
        return lm.spec().source() != null ? lm.spec().source() : "the model's config";
    }
}
