package org.orbitrl.memory.plan.internal;

import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;

/**
 * The routed-expert part of an adapter-training step, as the sparse MoE block and its expert
 * chunker hold it. Every buffer is f32. Per MoE layer and per routed (token, expert) pair:
 *
 * <ul>
 *   <li>kept for backward (the layer's tape): the gathered input {@code xe [h]}, the expert's output
 *       {@code ye [h]}, its gate and up projections and their SwiGLU product {@code g, u, act [I]}:
 *       {@code 2h + 3I};</li>
 *   <li>while one expert is differentiated, per pair of that expert: {@code dxe [h]}, {@code dact,
 *       dg, du [I]}, {@code tmp [h]}, and LoRA on the experts adds its rank-r intermediates
 *       {@code xa, dy·B [r]} and {@code (dy·B)·A [h]}; a device also uploads {@code dy·w [h]} and the
 *       row ids (i32);</li>
 *   <li>the router's gradient {@code dxr [h]} per token, and on a device its uploaded logits gradient
 *       {@code [E]}.</li>
 * </ul>
 *
 * The busiest expert's pairs are the even share {@code tokens·k/E} times {@link #IMBALANCE}, at most
 * one per token. Dequantization: each MoE layer's chunker keeps its own buffer of {@code C} expert
 * slots {@code [C, 3, I·h]} f32 from its first forward on, in every model instance that runs the
 * chunked path (the trainer's model and the rollout engine's view of it). Only the Qwen3-MoE and
 * DeepSeek-V3 families (Kimi-K2 included) have the chunked path; the others run quantized experts
 * through fused dequantize-multiply kernels and hold no chunk buffer.
 */
public final class MoeWorkingSet {
    /** Expected worst-case load on one expert (or one GPU's experts) relative to perfectly even routing. */
    public static final double IMBALANCE = 1.25;
    /** False: every MoE layer's chunker has its own buffer; true: one buffer serves all layers of a model instance. */
    static final boolean BUFFER_SHARED_BY_LAYERS = false;
    /** Bytes of one element of every buffer here. */
    static final int ELEMENT_BYTES = 4;

    private MoeWorkingSet() {
    }

    /** True if the model's MoE blocks run quantized experts through the chunked dequantization path. */
    public static boolean hasChunkedPath(ModelSpec s) {
        return s.isMoe() && (s.family() == ModelFamily.QWEN3_MOE || s.family() == ModelFamily.DEEPSEEK_V3);
    }

    /** Routed (token, expert) pairs one GPU's experts take per token: exactly k on one GPU, else the imbalanced share. */
    public static double pairsPerToken(ModelSpec s, int ep) {
        MoeSpec m = s.moe();
        return ep == 1 ? m.topK() : m.topK() * IMBALANCE / ep;
    }

    /** Elements per routed pair that a layer's tape keeps. */
    public static double tapePerPair(ModelSpec s) {
        return 2.0 * s.hiddenSize() + 3.0 * s.moe().moeIntermediateSize();
    }

    /** Elements per pair of the expert being differentiated, with LoRA of rank {@code loraRank} (0: none) on the experts. */
    public static double backwardPerPair(ModelSpec s, int loraRank, boolean device) {
        long h = s.hiddenSize();
        double e = 3.0 * h + 3.0 * s.moe().moeIntermediateSize();
        if (loraRank > 0) {
            e += 2.0 * loraRank + h;
        }
        if (device) {
            e += h + 1;
        }
        return e;
    }

    /** Pairs of the busiest expert per token: the imbalanced even share, at most 1. */
    public static double busiestExpertPerToken(ModelSpec s) {
        MoeSpec m = s.moe();
        return Math.min(1.0, m.topK() * IMBALANCE / m.numExperts());
    }

    /** Per-token elements of the MoE block's backward beyond its tape (the router's and the busiest expert's). */
    public static double backwardPerToken(ModelSpec s, int loraRank, boolean device) {
        double expert = busiestExpertPerToken(s) * backwardPerPair(s, loraRank, device);
        double router = s.hiddenSize() + (device ? s.moe().numExperts() : 0);
        return Math.max(expert, router);
    }

    /** Bytes of one layer's chunk buffer of {@code chunk} expert slots. */
    public static long chunkBufferBytes(ModelSpec s, int chunk) {
        return (long) chunk * 3 * s.moe().moeIntermediateSize() * s.hiddenSize() * ELEMENT_BYTES;
    }

    /** Bytes of dequantization buffers one model instance keeps: a chunk buffer per MoE layer (or one for all). */
    public static long dequantBytes(ModelSpec s, int chunk) {
        return (BUFFER_SHARED_BY_LAYERS ? 1 : s.numMoeLayers()) * chunkBufferBytes(s, chunk);
    }
}
