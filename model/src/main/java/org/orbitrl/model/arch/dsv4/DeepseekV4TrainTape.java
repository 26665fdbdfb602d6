package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.arch.Trainable;

import java.util.ArrayList;
import java.util.List;

/**
 * What a training forward keeps: the tape and the logits node; with recompute, the tape covers only the head (the
 * last layer's output on), and {@code recompute} holds each layer's input streams to run the layer again.
 */
final class DeepseekV4TrainTape implements Trainable.Tape {
    final GradTape tape;
    final Node logits;    // [N, vocab]
    final Recompute recompute;   // null: every layer is on the tape
    private final int vocab;
    private final org.orbitrl.kernels.TensorAllocator place;
    private Tensor placed;  // the logits in the backend's memory, made at the first ask
    boolean used;           // the backward has run
    private final org.orbitrl.model.arch.HostBuffers buffers;   // where offloaded inputs' host tensors go back

    DeepseekV4TrainTape(GradTape tape, Node logits, Recompute recompute, int vocab, org.orbitrl.kernels.TensorAllocator place,
              org.orbitrl.model.arch.HostBuffers buffers) {
        this.buffers = buffers;
        this.tape = tape;
        this.logits = logits;
        this.recompute = recompute;
        this.vocab = vocab;
        this.place = place;
    }

    @Override
    public Tensor logits() {
        if (placed == null) {
            placed = logits.onDevice() ? logits.placed(place, logits.size() / vocab, vocab)
                    : place.uploadFloats(MemoryCategory.LOGITS, logits.v(), logits.size() / vocab, vocab);
        }
        return placed;
    }

    /** Releases every layer's values (the recomputed layers' inputs), the head's and the logits. */
    @Override
    public void release(org.orbitrl.kernels.TensorAllocator a) {
        tape.release(a);
        if (recompute != null) {
            for (Node in : recompute.inputs) {
                if (in != null) {
                    in.release(a);
                }
            }
            recompute.last.release(a);
            recompute.host.forEach(buffers::give);
            recompute.host.clear();
        }
        logits.release(a);
        if (placed != null) {
            a.release(placed);
            placed = null;
        }
        used = true;
    }

    /**
     * A layer's inputs and where the layer's output went: what a backward with recompute needs to run each layer again
     * on its own tape, last layer first.
     */
    static final class Recompute {
        final Node[] inputs;    // [layer]: the input streams [N, hc, hidden]
        final List<Tensor> host = new ArrayList<>();   // the offloaded inputs' host tensors, given back at the release
        Node last;              // the last layer's output, on the head's tape
        int[] ids;
        int[] pos;
        DeepseekV4Attention.Seg[][] segs;   // [layer][sequence]

        Recompute(int layers) {
            inputs = new Node[layers];
            segs = new DeepseekV4Attention.Seg[layers][];
        }
    }
}
