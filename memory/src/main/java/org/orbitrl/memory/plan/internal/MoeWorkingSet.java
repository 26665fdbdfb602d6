package org.orbitrl.memory.plan.internal;

import org.orbitrl.memory.plan.AdapterSpec;
import org.orbitrl.memory.plan.ParamFamily;
import org.orbitrl.model.spec.ModelFamily;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;

/**
 * The routed-expert part of an adapter-training step. Every activation here is f32 (i32 ids count
 * the same 4 bytes). Two code paths run the block:
 *
 * <p><b>Grouped</b> (Qwen3-MoE, DeepSeek-V3, Kimi-K2, DeepSeek V4 and gpt-oss by default: one GPU holds every expert
 * and no adapter on the experts transforms the base input): the block keeps, per token and MoE layer, the router's probabilities
 * {@code [E]} (DeepSeek-V3's sigmoid scores), the chosen probabilities (not DeepSeek-V3's), routing weights, expert
 * ids and the grouped order and positions {@code [k]} each, and per routed pair the input row and the unweighted output
 * {@code xs, ys [h]} and {@code g, u, act [I]} (gpt-oss: its fused gate_up {@code [2I]} and {@code act [I]}, as many):
 * {@code E + 5k + k·(2h + 3I)}. Its backward releases
 * each gradient at its last use; its largest moment is that of one of its steps (see
 * {@link #backwardPerToken}). Quantized experts are dequantized C at a time:
 * on the host into an f32 temporary {@code [C, I·h]} of each grouped product (an activation,
 * released when the product ends), on a device into a bf16 buffer {@code [C, I·h]} that the
 * backend keeps and every layer shares (two, when the chunk does not hold every expert: the next
 * chunk is dequantized while the current one multiplies), with an f32 pad of one partial tile an
 * expert (plus the pairs' rows in bf16, {@code [P, max(h, I)]}, kept by the backend too).
 *
 * <p><b>Per expert</b> (under expert parallelism or with OFT on the experts): the MoE layers of a model
 * instance share one f32 buffer {@code [C, 3, I·h]} from the first forward on, in every model instance that
 * runs the chunked path. The routing decision is
 * on the host; per routed pair the tape keeps the gathered input, the expert's output and its
 * gate, up and SwiGLU product, {@code 2h + 3I}; one expert is differentiated at a time, holding per
 * pair of that expert {@code dxe, tmp [h]}, {@code dact, dg, du [I]}, LoRA's {@code xa, dy·B [r]}
 * and {@code (dy·B)·A [h]}, and on a device the uploaded {@code dy·w [h]} and row ids; the router's
 * gradient {@code dxr [h]} per token (and on a device its uploaded logits gradient {@code [E]}). The
 * busiest expert's pairs are the even share {@code tokens·k/E} times {@link #IMBALANCE}, at most
 * one per token.
 *
 * <p>gpt-oss's fused gate_up {@code [2I, h]} is the widest matrix a chunk slot holds ({@link #widestExpert}), and its
 * products' widest output row {@code 2I} ({@link #widestOut}); its per-expert form (OFT on the experts) multiplies each
 * expert through the backend's own quantized products and keeps no chunk buffer.
 */
public final class MoeWorkingSet {
    /** Expected worst-case load on one expert (or one GPU's experts) relative to perfectly even routing. */
    public static final double IMBALANCE = 1.25;

    private MoeWorkingSet() {
    }

    /** True if the model's MoE blocks run quantized experts through the chunked dequantization path. */
    public static boolean hasChunkedPath(ModelSpec s) {
        return s.isMoe() && (s.family() == ModelFamily.QWEN3_MOE || s.family() == ModelFamily.DEEPSEEK_V3
                || s.family() == ModelFamily.DEEPSEEK_V4 || s.family() == ModelFamily.GPT_OSS);
    }

    /** Elements of the widest routed-expert matrix a grouped product dequantizes: {@code I·h}; gpt-oss's gate_up {@code 2I·h}. */
    public static long widestExpert(ModelSpec s) {
        long ih = (long) s.moe().moeIntermediateSize() * s.hiddenSize();
        return s.family() == ModelFamily.GPT_OSS ? 2 * ih : ih;
    }

    /** The widest output row of a grouped expert product: {@code max(h, I)}; gpt-oss's {@code max(h, 2I)}. */
    public static long widestOut(ModelSpec s) {
        long inter = s.moe().moeIntermediateSize();
        return Math.max(s.hiddenSize(), s.family() == ModelFamily.GPT_OSS ? 2 * inter : inter);
    }

    /**
     * True if the MoE block runs grouped by expert in backend memory: Qwen3-MoE, DeepSeek-V3, Kimi-K2 or DeepSeek V4 with every
     * expert on this GPU ({@code ep == 1}) and no OFT on the experts (the block then runs per expert).
     */
    public static boolean grouped(ModelSpec s, int ep, AdapterSpec adapter) {
        boolean oftOnExperts = adapter instanceof AdapterSpec.Oft o && o.targets().contains(ParamFamily.ROUTED_EXPERTS);
        return hasChunkedPath(s) && ep == 1 && !oftOnExperts;
    }

    /** Routed (token, expert) pairs one GPU's experts take per token: exactly k on one GPU, else the imbalanced share. */
    public static double pairsPerToken(ModelSpec s, int ep) {
        MoeSpec m = s.moe();
        return ep == 1 ? m.topK() : m.topK() * IMBALANCE / ep;
    }

    /** Elements per token that a layer's tape keeps, for {@code k} routed pairs per token on this GPU. */
    public static double tapePerToken(ModelSpec s, double k) {
        MoeSpec m = s.moe();
        return m.numExperts() + 5.0 * k + k * (2.0 * s.hiddenSize() + 3.0 * m.moeIntermediateSize());
    }

    /**
     * Elements per token at the grouped backward's largest moment, for {@code k} pairs per token,
     * with LoRA of rank {@code loraRank} (0: none) on the experts and {@code hostChunk} elements per
     * token of the host's dequantization temporary (0 on a device). Each step holds only what is still
     * to be used: through down, {@code dys [h]}, the routing-weight gradient {@code [1]} and
     * {@code dact [I]} per pair beside the temporary or down's LoRA; through SwiGLU, the routing-weight
     * gradient and {@code dact, dg, du [I]}; through gate, the routing-weight gradient,
     * {@code dg, du [I]} and {@code dxs [h]}, then through up (which accumulates into {@code dxs})
     * the routing-weight gradient, {@code du [I]}, {@code dxs [h]} and, on the host, the product's
     * temporary {@code [h]} (a device adds into {@code dxs} directly; in exact mode it too takes the
     * temporary), each beside the dequantization temporary or their LoRA; through the router,
     * {@code dLogits [E]} and {@code dxr [h]} per token. {@code device}: the experts' LoRA
     * runs on a device backend, whose rank-r products accumulate {@code (dy·B)·A} into the input
     * gradient in place (ranks up to {@value #DEVICE_ACCUMULATED_RANK}), so its backward holds only
     * {@code xa} and {@code dy·B [r]}.
     */
    public static double backwardPerToken(ModelSpec s, double k, int loraRank, double hostChunk, boolean device) {
        long h = s.hiddenSize();
        long inter = s.moe().moeIntermediateSize();
        double down = k * (h + 1 + inter) + Math.max(hostChunk, k * expertLoraBackwardPerToken(loraRank, inter, device));
        double swiglu = k * (1 + 3.0 * inter);
        double gate = k * (1 + 2.0 * inter + h);
        double up = k * (1 + inter + (device ? 1.0 : 2.0) * h);
        double gateUp = Math.max(gate, up) + Math.max(hostChunk, k * expertLoraBackwardPerToken(loraRank, h, device));
        double router = s.moe().numExperts() + h;
        return Math.max(Math.max(down, swiglu), Math.max(gateUp, router));
    }

    /** Widest LoRA rank whose expert products a device backend accumulates in place. */
    static final int DEVICE_ACCUMULATED_RANK = 128;

    /** Per-pair elements of an expert LoRA's backward on an expert of {@code in} inputs. */
    static double expertLoraBackwardPerToken(int rank, double in, boolean device) {
        return device && rank > 0 && rank <= DEVICE_ACCUMULATED_RANK ? 2.0 * rank : ActivationModel.loraBackwardPerToken(rank, in);
    }

    /** Elements per token a device backend keeps of the grouped rows in bf16 ({@code [P, max(h, I)]}), as f32 elements. */
    public static double deviceRowsPerToken(ModelSpec s) {
        return s.moe().topK() * Math.max(s.hiddenSize(), s.moe().moeIntermediateSize()) / 2.0;
    }

    /** Elements per routed pair that a per-expert layer's tape keeps. */
    public static double perExpertTapePerPair(ModelSpec s) {
        return 2.0 * s.hiddenSize() + 3.0 * s.moe().moeIntermediateSize();
    }

    /** Per-token elements of the per-expert backward beyond its tape (the router's and the busiest expert's). */
    public static double perExpertBackwardPerToken(ModelSpec s, int loraRank, boolean device) {
        MoeSpec m = s.moe();
        long h = s.hiddenSize();
        double pair = 3.0 * h + 3.0 * m.moeIntermediateSize() + (loraRank > 0 ? 2.0 * loraRank + h : 0) + (device ? h + 1 : 0);
        double busiest = Math.min(1.0, m.topK() * IMBALANCE / m.numExperts());
        return Math.max(busiest * pair, h + (device ? m.numExperts() : 0));
    }

    /** Expert slots a chunk of {@code chunk} really fills: at most the experts one GPU holds. */
    public static int slots(ModelSpec s, int chunk, int ep) {
        return Math.max(0, Math.min(chunk, s.moe().numExperts() / ep));
    }

    /** Elements of the host's per-product f32 dequantization temporary {@code [C, widest expert]} (0 off the grouped host path). */
    public static long hostChunkElements(ModelSpec s, int chunk, int ep, AdapterSpec adapter, boolean device) {
        if (device || chunk <= 0 || !grouped(s, ep, adapter)) {
            return 0;
        }
        return slots(s, chunk, ep) * widestExpert(s);
    }

    /**
     * Rows a tile of a device backend's batched expert products: an expert's last, partial tile is
     * computed into an f32 pad {@code [C, T, max(h, I)]} kept beside the chunk buffer.
     */
    public static final int DEVICE_TILE_ROWS = 256;

    /**
     * Dequantization-buffer bytes that one expert slot of the chunk costs one model instance: grouped
     * on a device, the widest expert matrix ({@link #widestExpert}) bf16 in each half of the backend's double buffer
     * (the next chunk is dequantized while the current one multiplies) and its partial tile's f32 pad
     * {@code [T, widest output row]} ({@link #DEVICE_TILE_ROWS}); grouped on the host, none (an f32
     * activation instead, see {@link #hostChunkElements}); per expert, {@code 3·I·h} f32 in the one
     * buffer the instance's MoE layers share (gpt-oss's per-expert form: none).
     */
    public static long slotBytes(ModelSpec s, int ep, AdapterSpec adapter, boolean device) {
        return slotBytes(s, ep, adapter, device, true);
    }

    private static long slotBytes(ModelSpec s, int ep, AdapterSpec adapter, boolean device, boolean doubled) {
        if (grouped(s, ep, adapter)) {
            long pad = DEVICE_TILE_ROWS * widestOut(s) * 4;
            return device ? (doubled ? 2 : 1) * widestExpert(s) * 2 + pad : 0;
        }
        return s.family() == ModelFamily.GPT_OSS ? 0 : 3L * s.moe().moeIntermediateSize() * s.hiddenSize() * 4;
    }

    /** Dequantization-buffer bytes one model instance keeps for chunks of {@code chunk} experts. */
    public static long dequantBytes(ModelSpec s, int chunk, int ep, AdapterSpec adapter, boolean device) {
        boolean grouped = grouped(s, ep, adapter);
        int c = grouped ? slots(s, chunk, ep) : chunk;
        // one chunk holding every expert of the GPU has nothing to overlap: a single buffer
        return c * slotBytes(s, ep, adapter, device, !grouped || c < s.moe().numExperts() / ep);
    }
}
