package org.orbitrl.model.adapter;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.Linear;

import java.util.function.BooleanSupplier;

/**
 * LoRA on one linear layer: {@code y += scale · (x·Aᵀ)·Bᵀ} with A [r, in] and B [out, r] in f32.
 * Gradients of A and B accumulate into buffers of {@link MemoryCategory#ADAPTER_GRADS}. A may be
 * shared between two hooks (PEFT's fused gate_up expert LoRA shares one A between the gate and up
 * halves); its gradient then accumulates from both.
 */
public final class LoraLinear implements Linear.AdapterHook {
    private final Tensor a;      // [r, in]
    private final Tensor b;      // [out, r]
    private final Tensor gradA;  // [r, in]
    private final Tensor gradB;  // [out, r]
    private final float scale;
    private final BooleanSupplier enabled;

    public LoraLinear(Tensor a, Tensor b, Tensor gradA, Tensor gradB, float scale, BooleanSupplier enabled) {
        if (a.rank() != 2 || b.rank() != 2 || a.dim(0) != b.dim(1) || a.dtype() != DType.F32 || b.dtype() != DType.F32) {
            throw new IllegalArgumentException("LoRA A " + a + " and B " + b + " do not fit (A [r, in], B [out, r], f32)");
        }
        this.a = a;
        this.b = b;
        this.gradA = gradA;
        this.gradB = gradB;
        this.scale = scale;
        this.enabled = enabled;
    }

    public Tensor a() {
        return a;
    }

    public Tensor b() {
        return b;
    }

    public float scale() {
        return scale;
    }

    /** The accumulated gradient of A, [r, in]. */
    public Tensor gradA() {
        return gradA;
    }

    /** The accumulated gradient of B, [out, r]. */
    public Tensor gradB() {
        return gradB;
    }

    /** ΔW = scale · B · A, [out, in] f32: what merging this adapter adds to the base weight. */
    public Tensor delta() {
        float[] as = a.contiguous().toFloatArray();
        float[] bs = b.contiguous().toFloatArray();
        int r = rank();
        int in = a.size(1);
        int out = b.size(0);
        float[] d = new float[out * in];
        for (int o = 0; o < out; o++) {
            for (int j = 0; j < r; j++) {
                float bj = scale * bs[o * r + j];
                for (int i = 0; i < in; i++) {
                    d[o * in + i] += bj * as[j * in + i];
                }
            }
        }
        return Tensor.of(d, out, in);
    }

    public int rank() {
        return a.size(0);
    }

    @Override
    public boolean enabled() {
        return enabled.getAsBoolean();
    }

    @Override
    public LowRank lowRank() {
        return enabled() ? new LowRank(a, b, scale) : null;
    }

    @Override
    public void forward(Backend backend, Tensor x, Tensor y) {
        TensorAllocator al = backend.allocator();
        int m = Math.toIntExact(x.numel() / a.dim(1));
        Tensor xa = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, rank());   // [M, r]
        backend.matmul(x, a, xa);
        backend.matmulAxpy(xa, b, scale, y);                                          // y += s · xa · Bᵀ
        al.release(xa);
    }

    @Override
    public void backward(Backend backend, Tensor x, Tensor dy, Tensor dx) {
        if (gradA == null) {
            throw new IllegalStateException("a backward pass through a LoRA made without gradient buffers (a rollout slot's)");
        }
        TensorAllocator al = backend.allocator();
        int m = Math.toIntExact(x.numel() / a.dim(1));
        Tensor xa = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, rank());   // [M, r] recomputed
        backend.matmul(x, a, xa);
        Tensor dyB = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, rank());  // [M, r] = dy · B
        backend.matmulTransposed(dy, b, dyB);
        backend.matmulTN(dy, xa, scale, gradB);                                       // dB += s · dyᵀ · xa
        backend.matmulTN(dyB, x, scale, gradA);                                       // dA += s · (dy·B)ᵀ · x
        al.release(xa);
        backend.matmulTransposedAxpy(dyB, a, scale, dx);                              // dx += s · (dy·B) · A
        al.release(dyB);
    }
}
