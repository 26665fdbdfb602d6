package org.orbitrl.scheduler.job;

import org.orbitrl.kernels.DType;
import org.orbitrl.scheduler.job.yaml.Checks;
import org.orbitrl.scheduler.job.yaml.Section;

/**
 * Rollout sampling. Each sample records the temperature it was drawn at, since it can change
 * while the job runs.
 *
 * @param temperature softmax temperature (0 = greedy)
 * @param topP        nucleus mass kept (1 = off)
 * @param topK        most likely tokens kept (0 = off)
 * @param minP        tokens below {@code minP × p_max} dropped (0 = off)
 * @param decodeGraphs whether rollout's pure decode steps run as captured device graphs
 *                     ({@code auto}: on for device backends); the tokens are the same either way
 * @param kvCache      the element type of the rollout engines' paged KV cache ({@code kv_cache}): f32, or bf16 (half
 *                     the memory a token takes, so twice the sequences in the same cache; keys and values rounded to
 *                     bf16 as they are written; not with the exact kernels, whose steps must equal training's)
 */
public record SamplingSpec(@Tunable double temperature, double topP, int topK, double minP, DecodeGraphs decodeGraphs,
                           KvCache kvCache) {

    /** The {@code decode_graphs} setting. */
    public enum DecodeGraphs {
        /** On for device backends, off on the host. */
        AUTO,
        ON,
        OFF
    }

    /** The {@code kv_cache} setting. */
    public enum KvCache {
        F32(DType.F32),
        BF16(DType.BF16);

        private final DType dtype;

        KvCache(DType dtype) {
            this.dtype = dtype;
        }

        public DType dtype() {
            return dtype;
        }
    }

    /** Decode graphs {@link DecodeGraphs#AUTO}, an f32 cache. */
    public SamplingSpec(double temperature, double topP, int topK, double minP) {
        this(temperature, topP, topK, minP, DecodeGraphs.AUTO);
    }

    /** An f32 cache. */
    public SamplingSpec(double temperature, double topP, int topK, double minP, DecodeGraphs decodeGraphs) {
        this(temperature, topP, topK, minP, decodeGraphs, KvCache.F32);
    }

    public SamplingSpec {
        new Checks()
                .range("temperature", temperature, 0.0, 10.0)
                .require(Double.isFinite(topP) && topP > 0 && topP <= 1, "top_p",
                        "must be greater than 0 and at most 1, got " + Checks.fmt(topP))
                .range("top_k", topK, 0, 1 << 20)
                .require(Double.isFinite(minP) && minP >= 0 && minP < 1, "min_p",
                        "must be at least 0 and less than 1, got " + Checks.fmt(minP))
                .require(decodeGraphs != null, "decode_graphs", "must be auto, on or off")
                .require(kvCache != null, "kv_cache", "must be f32 or bf16")
                .done();
    }

    static SamplingSpec read(Section s) {
        double t = s.number("temperature", 1.0);
        double p = s.number("top_p", 1.0);
        int k = s.integer("top_k", 0);
        double m = s.number("min_p", 0.0);
        DecodeGraphs g = s.choice("decode_graphs", DecodeGraphs.AUTO);
        KvCache kv = s.choice("kv_cache", KvCache.F32);
        return s.build(() -> new SamplingSpec(t, p, k, m, g, kv));
    }
}
