package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.nn.Weight;

import java.util.ArrayList;
import java.util.List;
import java.util.function.BiConsumer;

/**
 * Active-expert-chunked dequantization. Active experts (those with at least one routed token)
 * are taken C at a time; their quantized gate, up and down weights are dequantized into one
 * preallocated buffer of C expert slots, the chunk's experts run as dense matmuls, and the buffer
 * is reused for the next chunk. Peak extra memory is C experts, never the layer. Backward walks
 * the chunks again and re-dequantizes instead of storing anything.
 *
 * <p>Each expert's arithmetic does not depend on C (the same dequantized values, the same dense
 * kernels), so outputs and gradients are bit-identical for every chunk size.
 *
 * <p>A model instance makes one and hands it to all its MoE layers ({@code setExpertChunk} of the
 * model): the layers run one after another on the instance's thread and backend stream, and no
 * dequantized slot outlives the call that filled it, so one buffer serves every layer, forward
 * and backward. Another instance (a rollout engine's view beside the trainer's model) makes its own.
 */
final class ExpertChunker {
    private final int chunk;
    private Tensor buffer; // [C, 3, I*H] f32: per slot gate [I, H], up [I, H], down [H, I]

    /** @param chunk experts per chunk, at least 1 */
    ExpertChunker(int chunk) {
        if (chunk < 1) {
            throw new IllegalArgumentException("expert chunk size must be >= 1, got " + chunk);
        }
        this.chunk = chunk;
    }

    int chunk() {
        return chunk;
    }

    /** Bytes of the reused buffer for experts of intermediate size I and hidden size H. */
    static long bufferBytes(int chunk, int inter, int hidden) {
        return (long) chunk * 3 * inter * hidden * DType.F32.bytes();
    }

    /** Calls {@code body(expert, dense weights)} for every active expert, chunk by chunk. */
    void forEachActive(Backend b, DenseMlp[] experts, ExpertGroups groups, BiConsumer<Integer, Weight[]> body) {
        List<Integer> active = new ArrayList<>();
        for (int e = 0; e < experts.length; e++) {
            if (groups.count(e) > 0) {
                active.add(e);
            }
        }
        if (active.isEmpty()) {
            return;
        }
        int inter = experts[active.get(0)].gate.out();
        int hidden = experts[active.get(0)].gate.in();
        if (buffer == null) {
            buffer = b.allocator().allocate(MemoryCategory.DEQUANT_BUFFERS, DType.F32, chunk, 3, (long) inter * hidden);
        }
        for (int start = 0; start < active.size(); start += chunk) {
            int end = Math.min(active.size(), start + chunk);
            Weight[][] dense = new Weight[end - start][];
            for (int i = start; i < end; i++) {                 // dequantize the chunk
                DenseMlp ex = experts[active.get(i)];
                Tensor slot = buffer.select(0, i - start);      // [3, I*H]
                dense[i - start] = new Weight[]{
                        dequantized(b, ex.gate.weight(), slot.select(0, 0).reshape(inter, hidden)),
                        dequantized(b, ex.up.weight(), slot.select(0, 1).reshape(inter, hidden)),
                        dequantized(b, ex.down.weight(), slot.select(0, 2).reshape(hidden, inter))};
            }
            for (int i = start; i < end; i++) {                 // run the chunk's experts
                body.accept(active.get(i), dense[i - start]);
            }
        }
    }

    private static Weight dequantized(Backend b, Weight w, Tensor into) {
        if (w instanceof Weight.Quantized q) {
            b.dequantize(q.w(), into);
            return Weight.of(into);
        }
        return w;
    }
}
