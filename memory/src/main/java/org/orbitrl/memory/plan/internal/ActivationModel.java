package org.orbitrl.memory.plan.internal;

import org.orbitrl.memory.plan.AdapterSpec;
import org.orbitrl.memory.plan.ParamFamily;
import org.orbitrl.memory.plan.WeightInventory;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.DeepseekV4Spec;
import org.orbitrl.model.spec.MlaSpec;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;

/**
 * Activation memory of adapter training through a frozen base.
 *
 * <p>{@link #trainBytes} is what the training code holds at its peak, tensor by tensor, all f32, each
 * temporary released at its last use: the standard (grouped-query) and latent (MLA) attention models through
 * {@link #standardTrainBytes}, DeepSeek V4 through {@link DeepseekV4Activations}.
 *
 * <p>The rest of this description is the per-token estimate of one layer's forward working set in bf16 elements
 * ({@link #perTokenLayer}), which sizes the rollout's prefill scratch ({@link #forwardScratchBytes}): a layer keeps
 * what its nonlinearities need: the inputs of each RMSNorm (and its reciprocal RMS), the normalized inputs the
 * projections read, the attention's q, k, v, output and log-sum-exp, SwiGLU's gate and up, the router's logits and
 * weights and each routed token's expert gate and up; DeepSeek V4 also its hyper-connection streams and its
 * compressor's and indexer's projections. Parts that scale with heads or intermediate size are split by tensor
 * parallelism; routed-expert parts carry {@link #EXPERT_IMBALANCE} headroom for uneven routing.
 */
public final class ActivationModel {
    /** Expected worst-case load on one GPU's experts relative to perfectly even routing. */
    public static final double EXPERT_IMBALANCE = MoeWorkingSet.IMBALANCE;

    /**
     * Bytes a device's latent-attention backward holds at most beside the activations: a chunk of queries' scores and
     * their gradient (256 MiB each, {@code CudaMqaAttention}).
     */
    public static final long MLA_DEVICE_SCRATCH = 2 * (256L << 20);

    private ActivationModel() {
    }

    /** Per-token bf16 elements of one layer's working set: replicated part plus the tensor-parallel share. */
    static double perTokenLayer(ModelSpec s, int layer, int tp) {
        long h = s.hiddenSize();
        double rep = 4.0 * h + 4;                   // two norm inputs + normalized outputs, rstd as f32
        double shard = 0;
        if (s.deepseekV4() != null) {
            DeepseekV4Spec v = s.deepseekV4();
            long hc = v.hcMult();
            rep += 2.0 * hc * h + 4.0 * (2 + hc) * hc;   // residual streams into both mixers, their mixes (f32)
            long nh = s.numHeads();
            long hd = s.headDim();
            shard += v.qLoraRank() + 2.0 * nh * hd + (double) s.numKvHeads() * hd + (double) v.oGroups() * v.oLoraRank()
                    + 2.0 * nh;
            AttentionKind k = s.attentionKind(layer);
            if (k.isCompressed()) {
                long coff = k == AttentionKind.COMPRESSED_SPARSE ? 2 : 1;
                rep += 2.0 * coff * hd;
                if (k == AttentionKind.COMPRESSED_SPARSE) {
                    rep += (double) v.indexNHeads() * v.indexHeadDim() + 4.0 * v.indexHeadDim() + v.indexNHeads();
                }
            }
        } else if (s.mla() != null) {
            MlaSpec m = s.mla();
            long nh = s.numHeads();
            rep += m.qLoraRank() + m.kvLoraRank() + m.qkRopeHeadDim();
            shard += 2.0 * nh * m.qkHeadDim() + 2.0 * nh * m.vHeadDim() + 2.0 * nh;
        } else {
            shard += (double) s.numHeads() * s.headDim() + (double) s.numKvHeads() * (s.headDim() + s.vHeadDim())
                    + (double) s.numHeads() * s.vHeadDim() + 2.0 * s.numHeads();
        }
        double experts = 0;
        if (s.isMoeLayer(layer)) {
            MoeSpec m = s.moe();
            rep += 2.0 * m.numExperts() + 2.0 * m.topK();                      // router logits and weights, f32
            experts = m.topK() * EXPERT_IMBALANCE * 2.0 * m.moeIntermediateSize();
            shard += 2.0 * m.sharedIntermediateSize();
        } else {
            shard += 2.0 * s.intermediateSize();
        }
        return rep + shard / tp + experts;
    }

    /**
     * Bytes at the peak of a training step of {@code tokens} tokens of a model with standard
     * attention: forward (with or without recompute), the loss and the adapter-only backward, all
     * f32, with every temporary released at its last use (what a device allocator holds; a host's
     * reachable bytes can be more, since released tensors may stay referenced). The peak is in the
     * backward of some layer. Until then the step keeps every layer's input {@code [h]}, the final
     * norm's input and output and the running residual gradient ({@code 3h}); a device also keeps
     * the uploaded positions (1) and, when it runs chunked experts, the MoE block's bf16 rows
     * ({@link MoeWorkingSet#deviceRowsPerToken}). The loss's log-probabilities and uploads and the
     * head's input gradient are released before the layers' backward. Without recompute every
     * layer's tape is kept until backward ends; with it, only the layer being differentiated has one.
     * A layer's tape: both norms' outputs and the residual after attention {@code 3h}; q and k before
     * and after their norm and rope, v, and the attention output {@code 3·(Hq + Hkv)·D}, and on a device with
     * head dims of 64 or 128 the attention's softmax statistics {@code Hq} (what its tensor-core backward reads
     * instead of running the forward's softmax again); the dense
     * MLP's gate, up and SwiGLU output {@code 3I}, or the MoE block's (grouped or per expert, see
     * {@link MoeWorkingSet}). On top of the tapes, the working set of the layer being differentiated
     * is the larger of its MLP phase (the post-norm gradient {@code [h]} beside the block's backward,
     * then beside the residual gradient after the block) and its attention phase (the residual and
     * attention-input gradients {@code 2h} beside the attention backward's largest moment, then the
     * layer's input gradient {@code [h]}). Each backward's largest moment is the largest of its steps,
     * each holding only what is still to be used: see {@link #attentionWorkPerToken},
     * {@link #mlpWorkPerToken} and {@link MoeWorkingSet#backwardPerToken}. Heads and the dense MLP are
     * split by tensor parallelism. {@code chunk}: experts dequantized at a time (0: the experts are
     * not chunked).
     */
    public static long standardTrainBytes(ModelSpec s, AdapterSpec adapter, boolean recompute, int tp, int ep, boolean device,
                                          int chunk, long tokens) {
        return standardTrainBytes(s, adapter, recompute ? 0 : s.numLayers(), tp, ep, device, chunk, tokens);
    }

    /**
     * As {@link #standardTrainBytes(ModelSpec, AdapterSpec, boolean, int, int, boolean, int, long)} with the
     * last {@code kept} layers keeping their tapes from the forward and the others recomputed (0: full
     * recompute; every layer: none). The backward runs from the last layer down, so the peak is in the
     * backward of some layer j: a kept layer's with the tapes of the kept layers up to it, or a
     * recomputed layer's with its own tape alone, each beside j's working set.
     */
    public static long standardTrainBytes(ModelSpec s, AdapterSpec adapter, int kept, int tp, int ep, boolean device,
                                          int chunk, long tokens) {
        return standardTrainBytes(s, adapter, kept, tp, ep, device, chunk, tokens, false);
    }

    /**
     * As {@link #standardTrainBytes(ModelSpec, AdapterSpec, int, int, int, boolean, int, long)}; {@code offload}: the
     * recomputed layers' inputs wait in host memory, so the device keeps the kept layers' inputs and the one brought
     * back for the layer being differentiated.
     */
    public static long standardTrainBytes(ModelSpec s, AdapterSpec adapter, int kept, int tp, int ep, boolean device,
                                          int chunk, long tokens, boolean offload) {
        long h = s.hiddenSize();
        int rAttn = loraRank(adapter, ParamFamily.ATTENTION);
        int rMlp = loraRank(adapter, ParamFamily.DENSE_MLP);
        int rShared = loraRank(adapter, ParamFamily.SHARED_EXPERTS);
        int rExperts = loraRank(adapter, ParamFamily.ROUTED_EXPERTS);
        double qd = (double) s.numHeads() * s.headDim() / tp;
        double kvd = Math.ceil((double) s.numKvHeads() / tp) * s.headDim();
        int recomputed = s.numLayers() - Math.min(Math.max(kept, 0), s.numLayers());
        double inputs = offload && recomputed > 0 ? s.numLayers() - recomputed + 1 : s.numLayers();
        double persistent = (inputs + 3.0) * h + (device ? 1 : 0);
        double sharedInter = s.isMoe() ? (double) s.moe().sharedIntermediateSize() / tp : 0;
        if (device && chunk > 0 && s.isMoe() && MoeWorkingSet.grouped(s, ep, adapter)) {
            persistent += MoeWorkingSet.deviceRowsPerToken(s);
        }
        long hostChunk = s.isMoe() ? MoeWorkingSet.hostChunkElements(s, chunk, ep, adapter, device) : 0;
        double attnTape;
        double attnWork;
        if (s.mla() != null) {   // per token: the elements of tokens' worth over tokens
            double[] mla = mlaAttention(s, rAttn, tp, tokens);
            attnTape = mla[0] / tokens;
            attnWork = mla[1] / tokens;
        } else {
            double stats = device && (s.headDim() == 64 || s.headDim() == 128) ? (double) s.numHeads() / tp : 0;
            attnTape = 3 * (qd + kvd) + stats;
            attnWork = attentionWorkPerToken(h, qd, kvd, rAttn);
        }
        double attnPhase = 2.0 * h + Math.max(attnWork, h);
        int layers = s.numLayers();
        int firstKept = layers - Math.min(Math.max(kept, 0), layers);
        double keptTapes = 0;   // tapes of the kept layers from firstKept up to the layer at hand
        double peak = 0;        // the largest of a layer's live tapes beside its working set
        double tapes = 0;
        double maxPhase = 0;
        for (int i = 0; i < layers; i++) {
            double tape = 3.0 * h + attnTape;
            double mlpWork;
            if (s.isMoeLayer(i) && MoeWorkingSet.grouped(s, ep, adapter)) {
                double k = MoeWorkingSet.pairsPerToken(s, ep);
                tape += MoeWorkingSet.tapePerToken(s, k) + 3 * sharedInter;
                mlpWork = Math.max(MoeWorkingSet.backwardPerToken(s, k, rExperts, (double) hostChunk / tokens, device),
                        sharedInter > 0 ? mlpWorkPerToken(h, sharedInter, rShared) : 0);
            } else if (s.isMoeLayer(i)) {
                tape += MoeWorkingSet.pairsPerToken(s, ep) * MoeWorkingSet.perExpertTapePerPair(s) + 3 * sharedInter;
                mlpWork = Math.max(MoeWorkingSet.perExpertBackwardPerToken(s, rExperts, device),
                        sharedInter > 0 ? mlpWorkPerToken(h, sharedInter, rShared) : 0);
            } else {
                double inter = (double) s.intermediateSize() / tp;
                tape += 3 * inter;
                mlpWork = mlpWorkPerToken(h, inter, rMlp);
            }
            double mlpPhase = h + Math.max(mlpWork, h);
            double phase = Math.max(attnPhase, mlpPhase);
            tapes += tape;
            maxPhase = Math.max(maxPhase, phase);
            if (i >= firstKept) {
                keptTapes += tape;
                peak = Math.max(peak, keptTapes + phase);
            } else {
                peak = Math.max(peak, tape + phase);
            }
        }
        // without recompute every tape is counted to the end of the backward, beside the largest working set
        return (long) Math.ceil((persistent + (firstKept == 0 ? tapes + maxPhase : peak)) * tokens) * 4;
    }

    /**
     * Multi-head latent attention's part of a layer for {@code tokens} tokens (DeepSeek-V3, Kimi-K2: the absorbed form,
     * {@code DeepseekV3Attention}), in f32 elements: {@code [0]} what its tape keeps, {@code [1]} its backward's largest
     * moment beside its input and output gradients. With H heads (split by {@code tp}), R the latent rank, w = R + rope
     * the entry's width, qk = nope + rope and q_lora's rank ql, a token's tape holds q {@code [H·qk]}, q_a and its norm
     * {@code [2·ql]}, the latent {@code [R]}, the cache entry {@code [w]}, the absorbed queries {@code [H·w]}, the
     * latent outputs {@code [H·R]} and o's input {@code [H·v]} (a LoRA on kv_b adds its terms per head in the forward and
     * keeps no matrix). The backward holds, step by step, each gradient until its last use, and with kv_b adapted the
     * adapted matrix {@code [H·(nope+v), R]} made at its start until the key products: o's input gradient beside o's
     * LoRA; it and the latent outputs' gradient beside the per-head products' head-major temporaries ({@code MlaHeadProducts}: a group of heads' rows in and
     * out, at most 64 MiB each); the latent outputs', absorbed queries', entries' and values' gradients through the
     * attention; the absorbed queries', the latent's, the key rope's and q's through the key products (with their
     * temporaries); with kv_b adapted, the matrix's gradient {@code [H·(nope+v), R]} from the start to its image's
     * {@code [R, H·(nope+v)]} backward; then q's gradient beside kv_a's {@code [w]} and LoRA, and beside the
     * projection's partial input gradient {@code [h]}, q_b's and q_a's and their LoRA.
     */
    static double[] mlaAttention(ModelSpec s, int rank, int tp, long tokens) {
        MlaSpec m = s.mla();
        double n = tokens;
        double heads = Math.ceil((double) s.numHeads() / tp);
        long h = s.hiddenSize();
        double r = m.kvLoraRank();
        double rot = m.qkRopeHeadDim();
        double nope = m.qkNopeHeadDim();
        double vd = m.vHeadDim();
        double ql = m.qLoraRank();
        double w = r + rot;
        double qk = nope + rot;
        boolean adaptedKvB = rank > 0;
        double kvbW = adaptedKvB ? heads * (nope + vd) * r : 0;
        double tape = n * (heads * qk + 2 * ql + r + w + heads * w + heads * r + heads * vd);
        double dW = kvbW;   // the adapted matrix's gradient, live until its image's backward
        // the adapted matrix, made at the backward's start, live beside its gradient until the key products
        double o = n * (heads * vd + loraBackwardPerToken(rank, heads * vd)) + kvbW + dW;
        double values = n * (heads * vd + heads * r) + headTemps(heads, tokens, vd, r) + kvbW + dW;
        double attention = n * (heads * r + heads * w + w + r) + kvbW + dW;
        double keys = n * (heads * w + r + rot + heads * qk) + headTemps(heads, tokens, r, nope) + kvbW + dW;
        double image = adaptedKvB ? n * (r + rot + heads * qk) + 2 * dW + 2 * r * r + r * loraBackwardPerToken(rank, r) : 0;
        double kvA = n * (heads * qk + w + loraBackwardPerToken(rank, h));
        double q = ql > 0
                ? n * (h + heads * qk + Math.max(ql + loraBackwardPerToken(rank, ql), 2 * ql + loraBackwardPerToken(rank, h)))
                : n * (h + heads * qk + loraBackwardPerToken(rank, h));
        double work = Math.max(Math.max(Math.max(o, values), Math.max(attention, keys)), Math.max(image, Math.max(kvA, q)));
        return new double[]{tape, work};
    }

    /**
     * Elements of the absorbed attention's per-head products' temporaries for {@code tokens} tokens: a group of heads'
     * rows in ({@code in} wide) and out ({@code out} wide), the group as many heads as keep the wider within 64 MiB
     * (one at least).
     */
    static double headTemps(double heads, long tokens, double in, double out) {
        double perHead = Math.max(1, tokens * Math.max(in, out) * 4);
        double group = Math.max(1, Math.min(heads, Math.floor(MLA_HEAD_GROUP_BYTES / perHead)));
        return group * tokens * (in + out);
    }

    /** Bytes of a group of heads' head-major rows, in or out, in the absorbed attention's per-head products. */
    static final long MLA_HEAD_GROUP_BYTES = 64L << 20;

    /**
     * Per-token elements of a LoRA backward on a linear layer with {@code in} inputs: the recomputed
     * {@code xa} and {@code dy·B [r]}, then {@code dy·B} beside {@code (dy·B)·A [in]}; 0 without LoRA.
     */
    public static double loraBackwardPerToken(int rank, double in) {
        return rank > 0 ? Math.max(2.0 * rank, rank + in) : 0;
    }

    /**
     * Per-token elements of the attention backward's largest moment (beside its input and output
     * gradients): the output projection's input gradient {@code [Hq·D]} beside o's LoRA; the q, k and
     * v gradients beside those of q and k before their norms {@code 2·Hq·D + 3·Hkv·D}; or those of v
     * and of q and k before their norms beside the projections' partial input gradient {@code [h]} and
     * a LoRA of q, k or v.
     */
    static double attentionWorkPerToken(long h, double qd, double kvd, int rank) {
        return Math.max(qd + loraBackwardPerToken(rank, qd),
                Math.max(2 * qd + 3 * kvd, qd + 2 * kvd + h + loraBackwardPerToken(rank, h)));
    }

    /**
     * Per-token elements of the dense MLP backward's largest moment (beside its input and output
     * gradients): {@code dact [I]} beside down's LoRA; {@code dact, dg, du [I]}; or {@code dg, du}
     * beside the partial input gradient {@code [h]} and gate's LoRA.
     */
    static double mlpWorkPerToken(long h, double inter, int rank) {
        return Math.max(inter + loraBackwardPerToken(rank, inter),
                Math.max(3 * inter, 2 * inter + h + loraBackwardPerToken(rank, h)));
    }

    private static int loraRank(AdapterSpec adapter, ParamFamily f) {
        return adapter instanceof AdapterSpec.Lora l && l.targets().contains(f) ? l.rank() : 0;
    }

    /** Residual-stream elements per token a recomputed layer keeps (its input). */
    public static long residualPerToken(ModelSpec s) {
        return s.deepseekV4() == null ? s.hiddenSize() : (long) s.deepseekV4().hcMult() * s.hiddenSize();
    }

    /**
     * Bytes of training activations for {@code tokens} tokens on one GPU; {@code device} adds what a
     * device keeps of values the host builds (uploaded ids and gradients); {@code chunk} is the number
     * of routed experts dequantized at a time, 0 when they are not chunked.
     */
    public static long trainBytes(WeightInventory inv, AdapterSpec adapter, long tokens, boolean recompute, int tp, int ep,
                                  boolean device, int chunk) {
        return trainBytes(inv, adapter, tokens, recompute ? 0 : inv.spec().numLayers(), tp, ep, device, chunk);
    }

    /**
     * As {@link #trainBytes(WeightInventory, AdapterSpec, long, boolean, int, int, boolean, int)} with the
     * last {@code kept} layers keeping their activations and the others recomputed (0: full recompute;
     * every layer: none), one sequence, the inputs on the device.
     */
    public static long trainBytes(WeightInventory inv, AdapterSpec adapter, long tokens, int kept, int tp, int ep,
                                  boolean device, int chunk) {
        return trainBytes(inv, adapter, tokens, 1, kept, tp, ep, device, chunk, false);
    }

    /**
     * As {@link #trainBytes(WeightInventory, AdapterSpec, long, int, int, int, boolean, int)} for {@code sequences}
     * sequences of {@code tokens} tokens in all (DeepSeek V4 copies each sequence's rows out of the batch's);
     * {@code offload}: the recomputed layers' inputs wait in host memory (see {@link #offloadedBytes}).
     */
    public static long trainBytes(WeightInventory inv, AdapterSpec adapter, long tokens, int sequences, int kept, int tp,
                                  int ep, boolean device, int chunk, boolean offload) {
        ModelSpec s = inv.spec();
        if (s.deepseekV4() != null) {
            return tokens == 0 ? 0
                    : DeepseekV4Activations.trainBytes(s, adapter, tokens, sequences, kept, ep, device, chunk, offload);
        }
        if (tokens == 0) {
            return 0;
        }
        return standardTrainBytes(s, adapter, kept, tp, ep, device, chunk, tokens, offload)
                + (device && s.mla() != null ? MLA_DEVICE_SCRATCH : 0);
    }

    /**
     * Host bytes the recomputed layers' inputs take when they wait in host memory: f32, the residual stream of each
     * ({@code [hc·h]} for DeepSeek V4's streams) for {@code tokens} tokens.
     */
    public static long offloadedBytes(ModelSpec s, long tokens, int kept) {
        int recomputed = s.numLayers() - Math.min(Math.max(kept, 0), s.numLayers());
        return (long) recomputed * residualPerToken(s) * tokens * 4;
    }

    /** Bytes of one layer's forward working set for {@code tokens} tokens (rollout prefill scratch). */
    public static long forwardScratchBytes(WeightInventory inv, long tokens, int tp) {
        ModelSpec s = inv.spec();
        double max = 0;
        for (int i = 0; i < s.numLayers(); i++) {
            max = Math.max(max, perTokenLayer(s, i, tp));
        }
        return (long) Math.ceil(max * tokens * 2);
    }
}
