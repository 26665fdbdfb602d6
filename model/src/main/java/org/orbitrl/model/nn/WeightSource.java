package org.orbitrl.model.nn;

import org.orbitrl.kernels.Tensor;

import java.util.Set;

/** Named base tensors, as a checkpoint provides them. */
public interface WeightSource {

    boolean has(String name);

    /** The tensor {@code name}, checked against {@code shape}; throws naming the tensor and file otherwise. */
    Tensor tensor(String name, long... shape);

    /** Every tensor name the source holds. */
    Set<String> names();
}
