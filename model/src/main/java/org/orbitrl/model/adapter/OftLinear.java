package org.orbitrl.model.adapter;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.OftOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.adapter.internal.OftDevice;
import org.orbitrl.model.adapter.internal.OftMath;
import org.orbitrl.model.nn.Linear;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.function.BooleanSupplier;

/**
 * OFT on one linear layer, as PEFT 0.21 computes it: the base weight multiplies the rotated input,
 * {@code y = (x·R)·Wᵀ + b}, where R is block-diagonal with blocks R_i [b, b] acting on the input
 * slices x[:, i·b, (i+1)·b) (with block_share every slice uses R_0). Each stored block is the
 * Cayley map (or Cayley-Neumann series) of a skew-symmetric matrix whose upper triangle is one row
 * of the parameter [stored blocks, b(b−1)/2]; see {@link OftMath} and {@link org.orbitrl.kernels.OftOps}.
 *
 * <p>The rotation is built from the parameter through {@link Backend#oftRotation} (one launch on a
 * device: stored·b³ flops in double precision, one block of threads per rotation block). Unprepared,
 * the layer rebuilds it at every forward and again in the backward, into a per-call buffer, so
 * whatever writes the parameter (an optimizer step, a checkpoint load, on any stream) needs no
 * notification and can never leave a stale rotation. {@link #prepare} builds it once into a buffer
 * the layer keeps (a further stored·b² f32 beside the parameter), used by every forward and backward
 * until {@link #unprepare}: a rollout slot prepares after each publication into it (a decode step
 * then costs one rotation of the activations per layer), and a training step around its
 * micro-batches (the optimizer writes the parameter after them). The same kernel builds it from the
 * same values either way, so prepared and rebuilt rotations are equal bit for bit. With coft the
 * parameter is first projected in place ({@link Backend#oftProject}), as PEFT does at every forward
 * (once at {@link #prepare} when prepared; the projection is idempotent); the gradient is then
 * taken at the projected values.
 *
 * <p>Backward: with g = dL/d(x·R) (what the layer's dx holds on entry), dx = g·Rᵀ blockwise,
 * dL/dR_i = Σ_rows x_iᵀ·g_i, and the parameter gradient follows through the Cayley map's
 * derivative ({@link Backend#oftRotationBackward}). Gradients accumulate into a buffer of
 * {@link MemoryCategory#ADAPTER_GRADS}.
 *
 * <p>Device memory (the parameter from a device allocator): every step above is a backend op
 * ({@link OftDevice}: the activations rotated by {@link Backend#oftRotate}, dL/dR by per-block
 * products); the forward and backward read nothing back to the host. Host memory: the same
 * rotation-block ops on the host, and the activations rotated by a loop.
 */
public final class OftLinear implements Linear.AdapterHook {
    private final Tensor weight;    // [stored, n] packed skew upper triangles (the trainable parameter)
    private final Tensor grad;      // [stored, n]
    private final OftSettings settings;
    private final OftSettings.Layout layout;
    private final int in;
    private final BooleanSupplier enabled;
    private final TensorAllocator memory;  // the parameter's allocator
    private final OftDevice device;        // null for host memory
    private Tensor held;                   // [stored, b, b] R_jᵀ kept by prepare, or null
    private boolean prepared;              // held holds the rotation of the parameter's values

    /**
     * @param weight    the parameter [stored, b(b−1)/2], f32
     * @param grad      its gradient buffer, same shape
     * @param in        the layer's input width (blocks · b)
     * @param allocator the parameter's allocator (host or device memory)
     */
    public OftLinear(Tensor weight, Tensor grad, int in, OftSettings settings, TensorAllocator allocator,
                     BooleanSupplier enabled) {
        this.layout = settings.layout(in);
        if (weight.rank() != 2 || weight.dim(0) != layout.storedBlocks() || weight.dim(1) != layout.elements()
                || weight.dtype() != DType.F32 || !weight.isContiguous()) {
            throw new IllegalArgumentException("OFT parameter " + weight + " does not fit a layer of width " + in
                    + ": expected f32 [" + layout.storedBlocks() + ", " + layout.elements() + "]");
        }
        this.weight = weight;
        this.grad = grad;
        this.settings = settings;
        this.in = in;
        this.enabled = enabled;
        this.memory = allocator;
        this.device = allocator.hostMemory() ? null : new OftDevice(layout.blocks(), layout.blockSize(), layout.storedBlocks());
    }

    public OftSettings.Layout layout() {
        return layout;
    }

    /**
     * The rotation blocks R_j [stored, b, b] in host memory for the current parameter values, after the
     * coft projection a forward would apply (written back to the parameter). For inspection: it reads
     * device memory back.
     */
    public Tensor rotation() {
        Tensor w = memory.toHost(weight);   // the parameter itself for host memory, else a host copy
        if (settings.coft()) {
            OftOps.project(w, radius());
            if (w != weight) {
                memory.copy(w, weight);
            }
        }
        int b = layout.blockSize();
        int stored = layout.storedBlocks();
        Tensor rt = Tensor.allocate(Arena.ofAuto(), DType.F32, stored, b, b);
        OftOps.rotation(w, terms(), rt);
        return rt.transpose(1, 2).contiguous();
    }

    @Override
    public boolean enabled() {
        return enabled.getAsBoolean();
    }

    /**
     * Builds the rotation R_jᵀ [stored, b, b] once (after the coft projection) into a buffer this layer
     * keeps, on {@code backend}; forwards and backwards use it until {@link #unprepare}. Call again
     * whenever the parameter has been written.
     */
    public void prepare(Backend backend) {
        if (settings.coft()) {
            backend.oftProject(weight, radius());
        }
        if (held == null) {
            int b = layout.blockSize();
            held = memory.allocate(MemoryCategory.ADAPTER_PARAMS, DType.F32, layout.storedBlocks(), b, b);
        }
        backend.oftRotation(weight, terms(), held);
        prepared = true;
    }

    /** Forwards rebuild the rotation from the parameter again (the buffer is kept for the next {@link #prepare}). */
    public void unprepare() {
        prepared = false;
    }

    @Override
    public boolean transformsInput() {
        return true;
    }

    @Override
    public Tensor baseInput(Backend backend, Tensor x) {
        Tensor rt;                             // [stored, b, b] R_jᵀ
        if (prepared) {
            rt = held;
        } else {
            if (settings.coft()) {
                backend.oftProject(weight, radius());
            }
            rt = buildRotation(backend);
        }
        if (device != null) {
            Tensor out = device.rotate(backend, x, rt);
            if (rt != held) {
                backend.allocator().release(rt);
            }
            return out;
        }
        float[] r = rt.toFloatArray();
        if (rt != held) {
            backend.allocator().release(rt);
        }
        float[] xs = x.contiguous().toFloatArray();   // [M, in]
        float[] out = new float[xs.length];           // [M, in] = x·R blockwise
        int b = layout.blockSize();
        int rows = xs.length / in;
        for (int m = 0; m < rows; m++) {
            for (int i = 0; i < layout.blocks(); i++) {
                int base = m * in + i * b;
                int ro = (layout.storedBlocks() == 1 ? 0 : i) * b * b;
                for (int k = 0; k < b; k++) {
                    float xv = xs[base + k];
                    for (int c = 0; c < b; c++) {
                        out[base + c] += xv * r[ro + c * b + k];
                    }
                }
            }
        }
        Tensor xr = backend.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows, in);
        MemorySegment.copy(out, 0, xr.segment(), ValueLayout.JAVA_FLOAT_UNALIGNED,
                xr.byteOffset(), out.length);
        return xr;
    }

    /** OFT adds nothing on top of the base output: its effect is the rotated input. */
    @Override
    public void forward(Backend backend, Tensor x, Tensor y) {
    }

    @Override
    public void backward(Backend backend, Tensor x, Tensor dy, Tensor dx) {
        if (grad == null) {
            throw new IllegalStateException("a backward pass through an OFT rotation made without a gradient buffer (a"
                    + " rollout slot's)");
        }
        TensorAllocator al = backend.allocator();
        Tensor rt = prepared ? held : buildRotation(backend);   // [stored, b, b] R_jᵀ, from the values the forward used
        if (device != null) {
            Tensor dR = device.backward(backend, x, dx, rt);   // [stored, b, b] dL/dR_j
            backend.oftRotationBackward(weight, dR, terms(), grad);
            al.release(dR);
            if (rt != held) {
                al.release(rt);
            }
            return;
        }
        float[] r = rt.toFloatArray();
        if (rt != held) {
            al.release(rt);
        }
        float[] xs = x.contiguous().toFloatArray();   // [M, in]
        float[] g = dx.contiguous().toFloatArray();   // [M, in] dL/d(x·R)
        float[] out = new float[g.length];            // [M, in] dL/dx = g·Rᵀ blockwise
        int b = layout.blockSize();
        int stored = layout.storedBlocks();
        double[] gr = new double[stored * b * b];     // [stored, b, b] dL/dR_j
        int rows = xs.length / in;
        for (int m = 0; m < rows; m++) {
            for (int i = 0; i < layout.blocks(); i++) {
                int base = m * in + i * b;
                int j = stored == 1 ? 0 : i;
                int ro = j * b * b;
                for (int k = 0; k < b; k++) {
                    float acc = 0;
                    double xv = xs[base + k];
                    for (int c = 0; c < b; c++) {
                        acc += g[base + c] * r[ro + c * b + k];
                        gr[ro + k * b + c] += xv * g[base + c];
                    }
                    out[base + k] = acc;
                }
            }
        }
        dx.copyFrom(Tensor.of(out, dx.shape()));
        float[] grf = new float[gr.length];
        for (int i = 0; i < gr.length; i++) {
            grf[i] = (float) gr[i];
        }
        backend.oftRotationBackward(weight, Tensor.of(grf, stored, b, b), terms(), grad);
    }

    /** R_jᵀ [stored, b, b] for the parameter's current values, in a per-call buffer of {@code backend}. */
    private Tensor buildRotation(Backend backend) {
        int b = layout.blockSize();
        Tensor rt = backend.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, layout.storedBlocks(), b, b);
        backend.oftRotation(weight, terms(), rt);
        return rt;
    }

    /** The Cayley-Neumann terms, or 0 for the exact Cayley map (the convention of the backend ops). */
    private int terms() {
        return settings.cayleyNeumann() ? settings.neumannTerms() : 0;
    }

    /** PEFT's coft radius: eps / sqrt(stored blocks). */
    private double radius() {
        return settings.eps() / Math.sqrt(layout.storedBlocks());
    }
}
