package org.orbitrl.scheduler.rl;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

/**
 * A trainable tensor and its name (the PEFT tensor name for adapter weights).
 *
 * @param name  unique name, used in optimizer state keys and error reports
 * @param value contiguous f32 tensor, updated in place by the optimizer
 */
public record Parameter(String name, Tensor value) {

    public Parameter {
        if (name == null || name.isEmpty()) {
            throw new IllegalArgumentException("parameter name is missing");
        }
        if (value.dtype() != DType.F32) {
            throw new IllegalArgumentException("parameter " + name + " must be f32, got " + value);
        }
        value.requireContiguous("parameter " + name);
    }
}
