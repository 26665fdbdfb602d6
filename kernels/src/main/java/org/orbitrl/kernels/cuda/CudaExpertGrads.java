package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

import java.lang.foreign.Arena;

/**
 * {@link org.orbitrl.kernels.Backend#moeExpertGradTN} on the device ({@code moe_grad.cu}): every
 * active expert's gradient in one launch, a tile of one expert's gradient per block, instead of a
 * product per expert. The launch reads the offsets, the active experts and the gradients'
 * addresses from one small upload.
 */
final class CudaExpertGrads {
    private final CudaContext ctx;
    private final Kernel square;
    private final Kernel wide;   // 32 x 128 tiles: N <= 32
    private final Kernel tall;   // 128 x 32 tiles: M <= 32

    CudaExpertGrads(CudaContext ctx) {
        this.ctx = ctx;
        this.square = ctx.kernel("moe_grad", "moe_grad_tn_64x64");
        this.wide = ctx.kernel("moe_grad", "moe_grad_tn_32x128");
        this.tall = ctx.kernel("moe_grad", "moe_grad_tn_128x32");
    }

    void gradTN(Tensor a, Tensor b, int[] offsets, float alpha, Tensor[] grads) {
        int experts = grads.length;
        ctx.dev("moeExpertGradTN a", a);
        ctx.dev("moeExpertGradTN b", b);
        if (a.rank() != 2 || b.rank() != 2 || a.dtype() != DType.F32 || b.dtype() != DType.F32 || a.strides()[1] != 1
                || b.strides()[1] != 1 || offsets.length != experts + 1 || a.size(0) != b.size(0) || offsets[0] != 0
                || a.size(0) < offsets[experts]) {
            throw new IllegalArgumentException("moeExpertGradTN: a " + a + " and b " + b + " must be f32 [P, N] and [P, M] with"
                    + " contiguous rows, covering " + (offsets.length - 1) + " experts' offsets for " + experts + " gradients");
        }
        int n = a.size(1);
        int m = b.size(1);
        int active = 0;
        for (int e = 0; e < experts; e++) {
            if (offsets[e + 1] < offsets[e]) {
                throw new IllegalArgumentException("moeExpertGradTN: offsets decrease at expert " + e);
            }
            if (offsets[e + 1] > offsets[e]) {
                ctx.devContiguous("moeExpertGradTN gradient of expert " + e, grads[e], DType.F32);
                if (grads[e].rank() != 2 || grads[e].dim(0) != n || grads[e].dim(1) != m) {
                    throw new IllegalArgumentException("moeExpertGradTN: gradient of expert " + e + " is " + grads[e]
                            + ", expected f32 [" + n + ", " + m + "]");
                }
                active++;
            }
        }
        if (active == 0) {
            return;
        }
        // one upload: offsets [E + 1] and active experts [active] as i32, then the gradients' addresses [E] as u64
        int ints = experts + 1 + active;
        int pad = ints % 2;
        Tensor meta = Tensor.allocate(Arena.ofAuto(), DType.I64, (ints + pad) / 2 + experts);
        java.nio.ByteBuffer buf = meta.segment().asSlice(meta.byteOffset(), meta.byteSize()).asByteBuffer()
                .order(java.nio.ByteOrder.nativeOrder());
        for (int o : offsets) {
            buf.putInt(o);
        }
        for (int e = 0; e < experts; e++) {
            if (offsets[e + 1] > offsets[e]) {
                buf.putInt(e);
            }
        }
        if (pad == 1) {
            buf.putInt(0);
        }
        for (Tensor g : grads) {
            buf.putLong(g == null ? 0L : CudaAllocator.address(g));
        }
        Tensor dev = ctx.allocator.upload(MemoryCategory.ACTIVATIONS, meta);
        long base = CudaAllocator.address(dev);
        long addrs = base + 4L * (ints + pad);
        Kernel k = n <= 32 ? wide : m <= 32 ? tall : square;
        int tn = k == wide ? 32 : k == tall ? 128 : 64;
        int tm = k == wide ? 128 : k == tall ? 32 : 64;
        long tiles = (long) ((n + tn - 1) / tn) * ((m + tm - 1) / tm);
        ctx.launch2d(k, tiles, active, 256, a, a.strides()[0], b, b.strides()[0], base, base + 4L * (experts + 1), addrs, n, m,
                alpha);
        ctx.allocator.release(dev);
    }
}
