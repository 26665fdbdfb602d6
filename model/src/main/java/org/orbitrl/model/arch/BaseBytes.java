package org.orbitrl.model.arch;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;

import java.util.IdentityHashMap;
import java.util.List;

/** Bytes of frozen base weights a model holds: each tensor and each linear's weight and bias counted once (a tied head). */
public final class BaseBytes {
    private BaseBytes() {
    }

    public static long of(List<Tensor> tensors, List<Linear> linears) {
        IdentityHashMap<Object, Boolean> seen = new IdentityHashMap<>();
        long bytes = 0;
        for (Tensor t : tensors) {
            if (seen.put(t, Boolean.TRUE) == null) {
                bytes += t.byteSize();
            }
        }
        for (Linear lin : linears) {
            Object key = lin.weight() instanceof Weight.Dense d ? d.w() : lin.weight();
            if (seen.put(key, Boolean.TRUE) == null) {
                bytes += lin.weight().byteSize();
            }
            if (lin.bias() != null && seen.put(lin.bias(), Boolean.TRUE) == null) {
                bytes += lin.bias().byteSize();
            }
        }
        return bytes;
    }
}
