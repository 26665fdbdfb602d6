package org.orbitrl.model.arch;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * What a pre-norm decoder's training forward ({@link PreNormDecoder}) keeps for backward: each
 * layer's input, each layer's own tape {@code L} (none under recompute: backward re-runs the layer),
 * the positions, the final norm's input and output, and the logits.
 */
public final class DecoderTape<L> implements Trainable.Tape {
    final boolean recompute;
    final List<CausalLM.Segment> batch;
    final int[] lengths;           // tokens per segment
    final Tensor[] layerInput;     // per layer [N, hidden]
    final List<L> layerTapes;      // per layer, null under recompute
    Tensor positions;              // i32 [N]
    Tensor finalInput;             // [N, hidden] before the final norm
    Tensor finalNormed;            // [N, hidden] the input of the LM head
    Tensor logits;                 // [N, vocab]
    OffloadedInputs offloaded;     // the recomputed layers' inputs in host memory, or null

    DecoderTape(int layers, boolean recompute, List<CausalLM.Segment> batch) {
        this.recompute = recompute;
        this.batch = batch;
        this.lengths = batch.stream().mapToInt(s -> s.tokens().length).toArray();
        this.layerInput = new Tensor[layers];
        this.layerTapes = new ArrayList<>(Collections.nCopies(layers, null));
    }

    @Override
    public Tensor logits() {
        return logits;
    }

    /** Releases the layer inputs, positions, final norm's input and output and logits (the layer tapes are the model's to release). */
    @Override
    public void release(TensorAllocator a) {
        for (Tensor t : layerInput) {
            if (t != null) {
                a.release(t);
            }
        }
        java.util.Arrays.fill(layerInput, null);
        for (Tensor t : new Tensor[]{positions, finalInput, finalNormed, logits}) {
            if (t != null) {
                a.release(t);
            }
        }
        positions = finalInput = finalNormed = logits = null;
        if (offloaded != null) {
            offloaded.release();
        }
    }
}
