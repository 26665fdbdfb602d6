package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;

/** Checks and staging shared by the host/device copies of {@link CudaBackend}. */
final class CudaCopies {
    private CudaCopies() {
    }

    static void checkCopy(Tensor a, Tensor b) {
        if (a.dtype() != b.dtype() || !java.util.Arrays.equals(a.shape(), b.shape())) {
            throw new IllegalArgumentException("copy between " + a + " and " + b + ": dtype and shape must match");
        }
    }

    static Tensor hostContiguous(Tensor host) {
        Tensor c = host.contiguous();
        if (!c.segment().isNative()) {
            Tensor n = Tensor.allocate(Arena.ofAuto(), c.dtype(), c.shape());
            n.copyFrom(c);
            c = n;
        }
        return c;
    }
}
