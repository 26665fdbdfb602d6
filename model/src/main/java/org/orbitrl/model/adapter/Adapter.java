package org.orbitrl.model.adapter;

import org.orbitrl.kernels.Tensor;

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

    /** Sets every gradient to zero. */
    default void zeroGrad() {
        params().forEach(p -> p.grad().fill(0));
    }

    /** The adapter's tensors in PEFT's names and layouts, as {@code adapter_model.safetensors} holds them. */
    Map<String, Tensor> peftTensors();

    /** The gradients in PEFT's layouts, keyed by the parameter's PEFT name. */
    Map<String, Tensor> peftGradients();
}
