package org.orbitrl.model.nn;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;

/**
 * A frozen linear layer {@code y = x·Wᵀ (+ b)} with an optional adapter hook. The base weight and
 * bias never train; an {@link AdapterHook} adds its delta on top in forward and takes its own
 * gradients in backward.
 */
public final class Linear {
    private final String name;
    private final Weight weight;   // [out, in]
    private final Tensor bias;     // [out] or null
    private AdapterHook adapter;

    public Linear(String name, Weight weight, Tensor bias) {
        this.name = name;
        this.weight = weight;
        this.bias = bias;
        if (bias != null && bias.numel() != weight.rows()) {
            throw new IllegalArgumentException(name + ": bias " + bias + " does not match " + weight.rows() + " outputs");
        }
    }

    /** The module path, as Hugging Face names it ({@code model.layers.0.self_attn.q_proj}). */
    public String name() {
        return name;
    }

    public Weight weight() {
        return weight;
    }

    public Tensor bias() {
        return bias;
    }

    public int in() {
        return Math.toIntExact(weight.cols());
    }

    public int out() {
        return Math.toIntExact(weight.rows());
    }

    public AdapterHook adapter() {
        return adapter;
    }

    public void setAdapter(AdapterHook adapter) {
        this.adapter = adapter;
    }

    /** y [M, out] = x [M, in] · Wᵀ + b (+ adapter delta). */
    public void forward(Backend backend, Tensor x, Tensor y) {
        forwardWith(weight, backend, x, y);
    }

    /**
     * As {@link #forward}, with {@code w} standing in for the base weight: the same matrix held
     * differently (a dequantized copy in a reused chunk buffer).
     */
    public void forwardWith(Weight w, Backend backend, Tensor x, Tensor y) {
        w.forward(backend, x, y);
        if (bias != null) {
            backend.addBias(y, bias);
        }
        if (adapter != null && adapter.enabled()) {
            adapter.forward(backend, x, y);
        }
    }

    /**
     * Backward through the frozen layer: dx [M, in] = dy [M, out] · W (overwritten), plus the
     * adapter's share; the adapter accumulates its own parameter gradients from x [M, in].
     * No gradient of W or the bias exists.
     */
    public void backward(Backend backend, Tensor x, Tensor dy, Tensor dx) {
        backwardWith(weight, backend, x, dy, dx);
    }

    /** As {@link #backward}, with {@code w} standing in for the base weight. */
    public void backwardWith(Weight w, Backend backend, Tensor x, Tensor dy, Tensor dx) {
        w.backward(backend, dy, dx);
        if (adapter != null && adapter.enabled()) {
            adapter.backward(backend, x, dy, dx);
        }
    }

    @Override
    public String toString() {
        return "Linear[" + name + ", " + weight.rows() + "x" + weight.cols() + (bias != null ? ", bias" : "") + "]";
    }

    /** An adapter attached to a linear layer (LoRA, OFT). */
    public interface AdapterHook {
        boolean enabled();

        /** Accumulates the adapter's contribution into y [M, out] given the layer input x [M, in]. */
        void forward(Backend backend, Tensor x, Tensor y);

        /**
         * Given the layer input x [M, in] and output gradient dy [M, out]: accumulates the adapter's
         * share of dx [M, in] and its own parameter gradients.
         */
        void backward(Backend backend, Tensor x, Tensor dy, Tensor dx);
    }
}
