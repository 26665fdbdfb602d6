package org.orbitrl.model.arch;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.util.List;

/** A model that can be trained through its adapter: a training forward that keeps a tape, and backward. */
public interface Trainable extends CausalLM {

    /** What a training forward keeps for backward. */
    interface Tape {
        /** Logits [total tokens, vocab] of the sequences, in order. */
        Tensor logits();

        /**
         * Releases to {@code a} (the model's allocator) what the tape keeps, the logits included, once
         * no backward through it is to come: the layer inputs and the other tensors a device would
         * otherwise hold until the garbage collector finds the tape unreachable. The tape must not be
         * used afterwards. The default keeps them for the collector.
         */
        default void release(TensorAllocator a) {
        }
    }

    /**
     * Forward over whole sequences (no cached past), keeping what backward needs; with
     * {@code recompute}, only layer inputs are kept and backward recomputes the rest.
     */
    Tape forwardTrain(List<int[]> sequences, boolean recompute);

    /** Adapter gradients (accumulated) and nothing else, from d loss / d logits [total tokens, vocab]. */
    void backward(Tape tape, Tensor dLogits);

    /**
     * Routed experts stored quantized are dequantized {@code experts} at a time into one reused buffer
     * for the expert products (the plan's expert chunk); 0 multiplies them through the fused
     * dequantize-multiply kernel instead. Models without routed experts ignore it.
     */
    default void setExpertChunk(int experts) {
    }

    /**
     * Under recompute, the last {@code layers} decoder layers keep their activations from the forward
     * for backward instead of running the layer again (the plan's kept layers): one layer forward a
     * step less for each, at one layer's activations each. Gradients are identical either way. Models
     * that keep every activation regardless ignore it.
     *
     * @throws IllegalArgumentException if {@code layers} is negative or more than the model has
     */
    default void setKeptLayers(int layers) {
    }

    /**
     * Under recompute, whether each recomputed layer's input waits in host memory between the forward and that layer's
     * backward ({@code memory.offload_inputs}) instead of device memory: a training step then holds one such input on
     * the device at a time where it held one a layer, for a copy of each to the host and back (the same values, so the
     * same gradients). Kept layers and steps without recompute are unchanged.
     *
     * @throws UnsupportedOperationException where the model cannot
     */
    default void setOffloadedInputs(boolean on) {
        if (on) {
            throw new UnsupportedOperationException(getClass().getSimpleName() + " does not offload its layers' inputs");
        }
    }
}
