package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * The per-expert offsets of a grouped call ([E + 1]: expert e's rows are [o_e, o_(e+1))), for the expert products of
 * one forward. Made from the host offsets (a training forward, whose backward needs them there) or from the device
 * offsets {@link Backend#moeGroup} wrote: then each product is first offered to the backend from the device ({@link
 * Backend#moeExpertMatmulRouted}), and the first one it declines reads the offsets back, that product and every later
 * one taking them from the host. A forward whose products the backend takes whole reads nothing back, so an inference
 * step's grouped experts can be captured. Either way every product has the bits of its host-offset call.
 */
final class GroupOffsets {
    private final TensorAllocator allocator;
    private final Tensor device;   // i32 [E + 1], or null
    private int[] host;

    private GroupOffsets(TensorAllocator allocator, Tensor device, int[] host) {
        this.allocator = allocator;
        this.device = device;
        this.host = host;
    }

    /** Offsets already on the host. */
    static GroupOffsets ofHost(int[] host) {
        return new GroupOffsets(null, null, host);
    }

    /** Offsets on the device (the caller's tensor, not released here), read back only where a product needs them. */
    static GroupOffsets ofDevice(TensorAllocator allocator, Tensor device) {
        return new GroupOffsets(allocator, device, null);
    }

    /** The offsets on the host, read back at the first call. */
    int[] host() {
        if (host == null) {
            long[] v = allocator.toHost(device).toLongArray();
            host = new int[v.length];
            for (int i = 0; i < v.length; i++) {
                host[i] = (int) v[i];
            }
        }
        return host;
    }

    private boolean routed(Backend b, Tensor xs, ExpertWeights w, float scale, Tensor ys, boolean accumulate) {
        return host == null && b.moeExpertMatmulRouted(xs, w, device, scale, ys, accumulate);
    }

    /** {@link Backend#moeExpertMatmul}. */
    void matmul(Backend b, Tensor xs, ExpertWeights w, Tensor ys, int chunk) {
        if (!routed(b, xs, w, 1f, ys, false)) {
            b.moeExpertMatmul(xs, w, host(), ys, chunk);
        }
    }

    /** {@link Backend#moeExpertMatmulShared}: from the device a set at a time while the backend takes them (the same bits). */
    void matmulShared(Backend b, Tensor xs, ExpertWeights[] ws, Tensor[] ys, int chunk) {
        int i = 0;
        while (i < ws.length && routed(b, xs, ws[i], 1f, ys[i], false)) {
            i++;
        }
        if (i == 0) {
            b.moeExpertMatmulShared(xs, ws, host(), ys, chunk);
        } else if (i < ws.length) {
            for (; i < ws.length; i++) {
                b.moeExpertMatmul(xs, ws[i], host(), ys[i], chunk);
            }
        }
    }

    /** {@link Backend#moeExpertMatmulAccumulate} of the forward (not transposed): ys += scale · the products. */
    void matmulAccumulate(Backend b, Tensor xs, ExpertWeights w, float scale, Tensor ys) {
        if (!routed(b, xs, w, scale, ys, true)) {
            b.moeExpertMatmulAccumulate(xs, w, host(), scale, ys, false);
        }
    }
}
