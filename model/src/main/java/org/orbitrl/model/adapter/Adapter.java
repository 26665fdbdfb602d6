package org.orbitrl.model.adapter;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.checkpoint.SafetensorsWriter;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * A trainable adapter attached to a frozen model (LoRA, OFT): what the optimizer, the checkpoint
 * writer and the reference policy need, whatever the adapter's math.
 */
public interface Adapter {

    /** One trainable tensor: its PEFT name, its value and its gradient (same shape and layout, f32). */
    interface Param {
        String name();

        Tensor value();

        Tensor grad();
    }

    AdapterConfig config();

    /** Trainable tensors in a fixed order (the optimizer's and the checkpoint's order). */
    List<? extends Param> params();

    boolean enabled();

    /** Switches the adapter off (the reference policy: the base alone) or on. */
    void setEnabled(boolean on);

    /** Number of trainable scalars. */
    default long parameterCount() {
        return params().stream().mapToLong(p -> p.value().numel()).sum();
    }

    /**
     * Declares the values constant until {@link #unprepare} or the next call: the adapter may compute
     * once, on {@code backend}, what every forward and backward would otherwise rebuild from them (an
     * OFT adapter its rotation blocks). Callers: a rollout slot after each publication into it
     * ({@link AdapterSlots}), and a training step around its micro-batches, before the optimizer
     * writes the values. Whoever writes the values in between calls this again. Default: nothing.
     */
    default void prepare(org.orbitrl.kernels.Backend backend) {
    }

    /** Ends {@link #prepare}: forwards rebuild from the values again. Default: nothing. */
    default void unprepare() {
    }

    /** Whether this adapter has gradient buffers; one made without them serves forward passes only (a rollout slot). */
    default boolean trainable() {
        return true;
    }

    /** Refuses {@code adapter} for work that needs its gradients, naming what it is. */
    static void requireTrainable(Adapter adapter) {
        if (!adapter.trainable()) {
            throw new IllegalStateException("this " + adapter.config().type() + " adapter was made without gradient"
                    + " buffers (it serves forward passes only, as a rollout slot does): it cannot take a backward pass");
        }
    }

    /** Sets every gradient to zero. */
    default void zeroGrad() {
        params().forEach(p -> p.grad().fill(0));
    }

    /** The adapter's tensors in PEFT's names and layouts, as {@code adapter_model.safetensors} holds them. */
    Map<String, Tensor> peftTensors();

    /** The gradients in PEFT's layouts, keyed by the parameter's PEFT name. */
    Map<String, Tensor> peftGradients();

    /**
     * Writes the adapter as PEFT's {@code save_pretrained} lays it out: {@code adapter_config.json}
     * and {@code adapter_model.safetensors} (PEFT names and layouts, f32, metadata format=pt) in {@code dir}.
     */
    default void save(Path dir) throws IOException {
        config().write(dir);
        new SafetensorsWriter().addAll(peftTensors()).metadata("format", "pt")
                .write(dir.resolve("adapter_model.safetensors"));
    }
}
