package org.orbitrl.memory.plan.internal;

import org.orbitrl.kernels.cuda.DeviceScratch;
import org.orbitrl.model.spec.ModelSpec;

/**
 * The activation bytes a device backend keeps for its own kernels during a training step or a
 * rollout, beside what the model code allocates (which {@link ActivationModel} counts): the buffers of
 * {@link DeviceScratch}, each grown to its largest request and kept, so all of them are live at the
 * step's peak. A host backend keeps none.
 *
 * <ul>
 *   <li><b>GEMM staging</b>: the bf16 copy of the f32 operand of a dense product, at most
 *       {@link DeviceScratch#STAGING_BYTES}: the largest of the head's output gradient
 *       {@code [head rows, vocab]}, the inputs {@code [tokens, h]} and {@code [tokens, Hq·D]}, the
 *       projections' output gradients {@code [tokens, Hq·D]}, {@code [tokens, Hkv·D]}, {@code [tokens, h]}, and
 *       the dense MLP's and shared experts' {@code [tokens, I]} (split by tensor parallelism).</li>
 *   <li><b>Attention backward</b>: log-sum-exp and delta, and the split partial dk and dv, of one
 *       sequence of {@code seqLen} tokens (the heads one GPU holds).</li>
 *   <li><b>RoPE tables</b>: cos and sin over every position.</li>
 * </ul>
 * The rollout engine runs on a backend of its own beside training (its own stream and scratch), so a
 * GPU that does both keeps both: the rollout's staging of its forward products over the largest
 * prefill chunk (or the decode batch, when larger), the tensor-core attention forward's bf16 copies
 * of one prompt's keys and values, and its own RoPE tables; no attention backward.
 *
 * <p>Exact mode ({@code -Dorbit.cuda.exact=true}) stages nothing in bf16; its products keep their split sums (at most
 * {@link DeviceScratch#EXACT_SPLIT_BYTES}) and, for an activation gradient through a bf16 weight, that weight's
 * transpose as a bf16 plane (the largest: the head's); its attention backward takes the tiled kernels without the
 * tensor-core ones' staging ({@link #exactTrainBytes}, {@link #exactRolloutBytes}).
 */
public final class KernelScratch {
    private KernelScratch() {
    }

    /**
     * Bytes a device keeps for its kernels while training {@code tokens} tokens in sequences of
     * {@code seqLen}, the head over {@code headRows} rows of a vocabulary shard of {@code vocabShard}.
     */
    public static long trainBytes(ModelSpec s, long tokens, long headRows, long vocabShard, int seqLen, int tp) {
        if (tokens == 0) {
            return 0;
        }
        return stagingBytes(s, tokens, headRows, vocabShard, tp) + attentionBackwardBytes(s, seqLen, tp) + ropeBytes(s);
    }

    /**
     * Bytes a device keeps for the rollout engine's kernels: prefilling {@code prefillTokens} tokens at
     * once and decoding {@code sequences} at once, only forward products (their f32 inputs
     * {@code [tokens, h]}, {@code [tokens, Hq·D]}, {@code [tokens, I]} of the dense MLP and shared
     * experts; the head's input {@code [tokens, h]}) staged, the prefill attention's bf16 keys and
     * values of a prompt of {@code promptLen} tokens, and the RoPE tables.
     */
    public static long rolloutBytes(ModelSpec s, long prefillTokens, long sequences, long promptLen, int tp) {
        long tokens = Math.max(prefillTokens, sequences);
        if (tokens <= 0) {
            return 0;
        }
        long h = s.hiddenSize();
        long qd = (long) Math.ceil((double) s.numHeads() / tp) * s.headDim();
        long inter = s.numDenseLayers() > 0 ? (s.intermediateSize() + tp - 1) / tp : 0;
        long shared = s.isMoe() ? (s.moe().sharedIntermediateSize() + tp - 1) / tp : 0;
        return DeviceScratch.stagingBytes(new long[]{tokens, h}, new long[]{tokens, qd}, new long[]{tokens, inter},
                new long[]{tokens, shared}) + attentionForwardBytes(s, promptLen, tp) + ropeBytes(s);
    }

    /**
     * Bytes a device in exact mode keeps for its kernels while training {@code tokens} tokens in sequences of
     * {@code seqLen}, the head over a vocabulary shard of {@code vocabShard}: the transposed plane of the largest bf16
     * weight a gradient goes through (the head's, or a wider projection's), the split sums, the attention backward's
     * scratch and the RoPE tables.
     */
    public static long exactTrainBytes(ModelSpec s, long tokens, long vocabShard, int seqLen, int tp) {
        if (tokens == 0) {
            return 0;
        }
        long h = s.hiddenSize();
        long qd = (long) Math.ceil((double) s.numHeads() / tp) * s.headDim();
        long inter = s.numDenseLayers() > 0 ? (s.intermediateSize() + tp - 1) / tp : 0;
        long widest = Math.max(vocabShard * h, Math.max(qd * h, inter * h));
        long attention = 0;
        if (s.deepseekV4() == null && seqLen > 0) {
            int hq = (s.numHeads() + tp - 1) / tp;
            int hkv = s.mla() != null ? hq : (s.numKvHeads() + tp - 1) / tp;
            int d = s.mla() != null ? s.mla().qkHeadDim() : s.headDim();
            int dv = s.mla() != null ? s.mla().vHeadDim() : s.vHeadDim();
            attention = DeviceScratch.exactAttentionBackwardBytes(seqLen, seqLen, hq, hkv, d, dv);
        }
        return DeviceScratch.exactPlaneBytes(widest) + DeviceScratch.EXACT_SPLIT_BYTES + attention + ropeBytes(s);
    }

    /**
     * Bytes a device in exact mode keeps for the rollout engine's kernels: the split sums of its products (at most
     * {@link DeviceScratch#EXACT_SPLIT_BYTES}, which a prefill of a few hundred tokens reaches) and the RoPE tables.
     */
    public static long exactRolloutBytes(ModelSpec s, long prefillTokens, long sequences) {
        if (Math.max(prefillTokens, sequences) <= 0) {
            return 0;
        }
        return DeviceScratch.EXACT_SPLIT_BYTES + ropeBytes(s);
    }

    /**
     * The tensor-core attention forward's bf16 keys and values for {@code keys} keys (standard attention
     * with head dims 64 or 128; none for MLA, whose head dims differ, or DeepSeek V4).
     */
    static long attentionForwardBytes(ModelSpec s, long keys, int tp) {
        if (s.deepseekV4() != null || s.mla() != null || keys <= 0) {
            return 0;
        }
        int hkv = (s.numKvHeads() + tp - 1) / tp;
        return DeviceScratch.attentionForwardBytes(Math.toIntExact(keys), hkv, s.headDim(), s.vHeadDim());
    }

    /** The GEMM staging buffer: the largest dense product's f32 operand in bf16, at most {@link DeviceScratch#STAGING_BYTES}. */
    public static long stagingBytes(ModelSpec s, long tokens, long headRows, long vocabShard, int tp) {
        long h = s.hiddenSize();
        long qd = (long) Math.ceil((double) s.numHeads() / tp) * s.headDim();
        long kvd = (long) Math.ceil((double) s.numKvHeads() / tp) * Math.max(s.headDim(), s.vHeadDim());
        long inter = s.numDenseLayers() > 0 ? (s.intermediateSize() + tp - 1) / tp : 0;
        long shared = s.isMoe() ? (s.moe().sharedIntermediateSize() + tp - 1) / tp : 0;
        return DeviceScratch.stagingBytes(new long[]{headRows, vocabShard}, new long[]{headRows, h}, new long[]{tokens, h},
                new long[]{tokens, qd}, new long[]{tokens, kvd}, new long[]{tokens, inter}, new long[]{tokens, shared});
    }

    /**
     * The attention backward's scratch for one sequence of {@code seqLen} tokens: standard attention with
     * its query and kv heads, MLA with one kv head a query head; none for DeepSeek V4 (its own kernels).
     */
    public static long attentionBackwardBytes(ModelSpec s, int seqLen, int tp) {
        if (s.deepseekV4() != null || seqLen <= 0) {
            return 0;
        }
        int hq = (s.numHeads() + tp - 1) / tp;
        if (s.mla() != null) {
            return DeviceScratch.attentionBackwardBytes(seqLen, seqLen, hq, hq, s.mla().qkHeadDim(), s.mla().vHeadDim());
        }
        int hkv = (s.numKvHeads() + tp - 1) / tp;
        return DeviceScratch.attentionBackwardBytes(seqLen, seqLen, hq, hkv, s.headDim(), s.vHeadDim());
    }

    /** The RoPE table over {@code max_position_embeddings} positions. */
    public static long ropeBytes(ModelSpec s) {
        return DeviceScratch.ropeTableBytes(s.maxPositionEmbeddings(), s.rotaryDim());
    }
}
