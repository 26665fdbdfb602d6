package org.orbitrl.memory.plan.internal;

import org.orbitrl.memory.plan.AdapterSpec;
import org.orbitrl.memory.plan.ParamFamily;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.DeepseekV4Spec;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.model.spec.MoeSpec;

/**
 * Activation memory of an adapter-training step of DeepSeek V4 ({@code DeepseekV4Model}), in f32 elements: every value
 * the step makes is an f32 tensor of the device's memory, kept by the tape until the step ends (the values an op's
 * backward reads) or by a recomputed layer's own tape during its backward.
 *
 * <p>A layer's tape, per token, with hc streams of h, H heads of d, q_lora rank ql and the mixes {@code (2+hc)·hc}
 * of a hyper-connection:
 * <ul>
 *   <li>each of its two hyper-connections: the normed streams {@code [hc·h]} and their mixes, the collapsed row
 *       {@code [h]} with its weights and row ids {@code [2·hc]}, the expanded streams {@code [hc·h]} with their
 *       weights {@code [hc + hc²]} and ids {@code [hc]}; the block's normed input {@code [h]};</li>
 *   <li>the attention: q_a and its norm {@code [2·ql]}, q_b, its norm and rope {@code [3·H·d]}, kv, its norm and rope
 *       {@code [3·d]}, the ropes' positions {@code [3]}, the compressor's two projections {@code [2·width]} (width
 *       {@code 2d} with the overlapping windows of compressed-sparse layers, else d) and the key rows with the
 *       compressed entries {@code [d + 2·d/rate]}, the attention's output, its rope {@code [2·H·d]} (on a host backend,
 *       which runs the attention on the host, the one copy o_a reads {@code [H·d]}), the grouped o_a's output and
 *       o_b's {@code [groups·o_rank + h]}; with several sequences each sequence's q and k rows are copied out
 *       {@code [H·d + d]} and, on a device, the outputs concatenated {@code [H·d]};</li>
 *   <li>the MoE block: its output {@code [h]} and routing weights {@code [k]} (its backward runs the experts again).</li>
 * </ul>
 * The head's tape: the last layer's streams {@code [hc·h]}, the head's normed streams and collapse {@code [hc·h + h
 * + hc]}, the final norm {@code [h]}. A layer's backward holds at its largest moment, besides the tape, the gradient
 * of the streams between its two blocks {@code [hc·h]} and the MoE block's: the output's and input's
 * gradients {@code [2h]}, the shared expert's gate, up and product again and their gradients {@code [6·Is]} beside
 * the routed experts' grouped tape and backward ({@link MoeWorkingSet}).
 *
 * <p>Without recompute the step keeps the embedding streams, every layer's tape and the head's, with one layer's
 * backward on top. With recompute each layer keeps only its input streams {@code [hc·h]}; the backward runs each layer
 * again on its own tape, so one layer's tape and backward are held at a time (the last {@code kept} layers keep their
 * tapes from the forward). With the inputs offloaded to host memory, the device holds only the one brought back for
 * the layer being differentiated.
 */
final class DeepseekV4Activations {
    private DeepseekV4Activations() {
    }

    static long trainBytes(ModelSpec s, AdapterSpec adapter, long tokens, int sequences, int kept, int ep, boolean device,
                           int chunk, boolean offload) {
        DeepseekV4Spec v = s.deepseekV4();
        long h = s.hiddenSize();
        double hc = v.hcMult();
        double streams = hc * h;
        int layers = s.numLayers();
        int firstKept = layers - Math.min(Math.max(kept, 0), layers);
        double head = streams + streams + h + hc + h;
        double tapes = 0;
        double keptTapes = 0;
        double peak = 0;
        double maxWork = 0;
        for (int i = 0; i < layers; i++) {
            double tape = layerTape(s, i, sequences > 1, device);
            double work = streams + moeWork(s, adapter, ep, device, chunk, tokens);
            tapes += tape;
            maxWork = Math.max(maxWork, work);
            if (i >= firstKept) {
                keptTapes += tape;
                peak = Math.max(peak, keptTapes + work);
            } else {
                peak = Math.max(peak, tape + work);
            }
        }
        double elems = firstKept == 0
                ? streams + tapes + head + maxWork
                : (offload ? 1 : firstKept) * streams + head + peak;
        if (device && chunk > 0 && MoeWorkingSet.grouped(s, ep, adapter)) {
            elems += MoeWorkingSet.deviceRowsPerToken(s);   // the grouped rows in bf16 the backend keeps
        }
        return (long) Math.ceil(elems * tokens) * 4;
    }

    /**
     * Elements per token of layer i's tape (see the class description); {@code split}: several sequences;
     * {@code device}: the sink attention runs in device memory (a host backend's runs on the host, and o_a reads one
     * copy of its output).
     */
    static double layerTape(ModelSpec s, int i, boolean split, boolean device) {
        DeepseekV4Spec v = s.deepseekV4();
        long h = s.hiddenSize();
        double hc = v.hcMult();
        double mixes = (2 + hc) * hc;
        double heads = s.numHeads();
        double d = s.headDim();
        double ql = v.qLoraRank();
        double hyper = 2 * (hc * h + mixes + h + 2 * hc + hc * h + hc + hc * hc + hc);
        double attn = 2 * ql + 3 * heads * d + 3 * d + 3 + (device ? 2 : 1) * heads * d + (double) v.oGroups() * v.oLoraRank()
                + h;
        AttentionKind kind = s.attentionKind(i);
        if (kind.isCompressed()) {
            double rate = v.compressRate(kind);
            double width = kind == AttentionKind.COMPRESSED_SPARSE ? 2 * d : d;
            attn += 2 * width + d + 2 * d / rate;
        }
        if (split) {
            attn += (device ? 2 : 1) * heads * d + d;
        }
        double moe = h + s.moe().topK();
        return hyper + 2 * h + attn + moe;
    }

    /** Elements per token of a MoE block's backward beside the layer's tape. */
    static double moeWork(ModelSpec s, AdapterSpec adapter, int ep, boolean device, int chunk, long tokens) {
        MoeSpec m = s.moe();
        long h = s.hiddenSize();
        double k = MoeWorkingSet.pairsPerToken(s, ep);
        int rank = adapter instanceof AdapterSpec.Lora l && l.targets().contains(ParamFamily.ROUTED_EXPERTS) ? l.rank() : 0;
        double hostChunk = (double) MoeWorkingSet.hostChunkElements(s, chunk, ep, adapter, device) / tokens;
        double routed = MoeWorkingSet.tapePerToken(s, k) + MoeWorkingSet.backwardPerToken(s, k, rank, hostChunk, device);
        double shared = 6.0 * m.sharedIntermediateSize();
        return 2.0 * h + Math.max(routed, shared);
    }
}
