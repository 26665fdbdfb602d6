package org.orbitrl.model.adapter;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.adapter.internal.OftDevice;
import org.orbitrl.model.adapter.internal.OftMath;
import org.orbitrl.model.nn.Linear;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.function.BooleanSupplier;

/**
 * OFT on one linear layer, as PEFT 0.21 computes it: the base weight multiplies the rotated input,
 * {@code y = (x·R)·Wᵀ + b}, where R is block-diagonal with blocks R_i [b, b] acting on the input
 * slices x[:, i·b, (i+1)·b) (with block_share every slice uses R_0). Each stored block is the
 * Cayley map (or Cayley-Neumann series) of a skew-symmetric matrix whose upper triangle is one row
 * of the parameter [stored blocks, b(b−1)/2]; see {@link OftMath}.
 *
 * <p>The rotation blocks are rebuilt whenever the parameter differs from the values they were built
 * from (compared bytewise before each forward), so an optimizer step or a slot copy needs no
 * notification. With coft the rebuild first projects the parameter in place, as PEFT does at every
 * forward; its gradient is then taken at the projected values.
 *
 * <p>Backward: with g = dL/d(x·R) (what the layer's dx holds on entry), dx = g·Rᵀ blockwise,
 * dL/dR_i = Σ_rows x_iᵀ·g_i, and the parameter gradient follows through the Cayley map's
 * derivative. Gradients accumulate into a buffer of {@link MemoryCategory#ADAPTER_GRADS}.
 *
 * <p>Device memory (the parameter from a device allocator): the rotation blocks are still built on
 * the host from a host copy of the parameter (they are small: b·b per block) and copied up,
 * transposed, once per change; the rotation of the activations and its backward run on the device
 * through backend ops ({@link OftDevice}); dL/dR comes back to the host for the Cayley derivative,
 * and the parameter gradient is accumulated there and copied back.
 */
public final class OftLinear implements Linear.AdapterHook {
    private final Tensor weight;    // [stored, n] packed skew upper triangles (the trainable parameter)
    private final Tensor grad;      // [stored, n]
    private final Tensor rotation;  // [stored, b, b] built from the parameter
    private final Tensor builtFrom; // [stored, n] the parameter values the rotation was built from
    private final OftSettings settings;
    private final OftSettings.Layout layout;
    private final int in;
    private final BooleanSupplier enabled;
    private final TensorAllocator memory;  // the parameter's allocator
    private final Tensor rotationT;        // [stored, b, b] R_jᵀ in device memory; null for host memory
    private final OftDevice device;        // null for host memory
    private boolean built;

    /**
     * @param weight    the parameter [stored, b(b−1)/2], f32
     * @param grad      its gradient buffer, same shape
     * @param in        the layer's input width (blocks · b)
     * @param allocator the parameter's allocator; the rotation blocks are kept there for host memory
     *                  ({@link MemoryCategory#ADAPTER_PARAMS}), on the host and transposed on the device otherwise
     */
    public OftLinear(Tensor weight, Tensor grad, int in, OftSettings settings, TensorAllocator allocator,
                     BooleanSupplier enabled) {
        this.layout = settings.layout(in);
        int b = layout.blockSize();
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
        boolean host = allocator.hostMemory();
        TensorAllocator hostSide = host ? allocator : TensorAllocator.heap();
        this.rotation = hostSide.allocate(MemoryCategory.ADAPTER_PARAMS, DType.F32, layout.storedBlocks(), b, b);
        this.builtFrom = hostSide.allocate(MemoryCategory.ADAPTER_PARAMS, DType.F32, weight.shape());
        this.rotationT = host ? null : allocator.allocate(MemoryCategory.ADAPTER_PARAMS, DType.F32, layout.storedBlocks(), b, b);
        this.device = host ? null : new OftDevice(layout.blocks(), b, layout.storedBlocks());
    }

    public OftSettings.Layout layout() {
        return layout;
    }

    /** The rotation blocks [stored, b, b] for the current parameter values (rebuilt if they changed). */
    public Tensor rotation() {
        ensureRotation();
        return rotation;
    }

    @Override
    public boolean enabled() {
        return enabled.getAsBoolean();
    }

    @Override
    public Tensor baseInput(Backend backend, Tensor x) {
        if (device != null) {
            ensureRotation();
            return device.rotate(backend, x, rotationT);
        }
        float[] r = rotation().toFloatArray();
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
                    int rk = ro + k * b;
                    for (int c = 0; c < b; c++) {
                        out[base + c] += xv * r[rk + c];
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
        if (device != null) {
            deviceBackward(backend, x, dx);
            return;
        }
        float[] r = rotation().toFloatArray();
        float[] xs = x.contiguous().toFloatArray();   // [M, in]
        float[] g = dx.contiguous().toFloatArray();   // [M, in] dL/d(x·R)
        float[] out = new float[g.length];            // [M, in] dL/dx = g·Rᵀ blockwise
        int b = layout.blockSize();
        int stored = layout.storedBlocks();
        double[][] gr = new double[stored][b * b];    // dL/dR per stored block
        int rows = xs.length / in;
        for (int m = 0; m < rows; m++) {
            for (int i = 0; i < layout.blocks(); i++) {
                int base = m * in + i * b;
                int j = stored == 1 ? 0 : i;
                int ro = j * b * b;
                double[] gj = gr[j];
                for (int k = 0; k < b; k++) {
                    int rk = ro + k * b;
                    float acc = 0;
                    double xv = xs[base + k];
                    for (int c = 0; c < b; c++) {
                        acc += g[base + c] * r[rk + c];
                        gj[k * b + c] += xv * g[base + c];
                    }
                    out[base + k] = acc;
                }
            }
        }
        dx.copyFrom(Tensor.of(out, dx.shape()));
        float[] q = weight.toFloatArray();
        float[] dq = grad.toFloatArray();
        int n = layout.elements();
        for (int j = 0; j < stored; j++) {
            double[] s = OftMath.skew(q, j * n, b);
            double[] dQ = settings.cayleyNeumann()
                    ? OftMath.neumannBackward(s, gr[j], b, settings.neumannTerms())
                    : OftMath.cayleyBackward(s, gr[j], b);
            OftMath.packGradient(dQ, b, dq, j * n);
        }
        grad.copyFrom(Tensor.of(dq, grad.shape()));
    }

    /** Device backward: dx ← g·Rᵀ on the device, dL/dR to the host, the parameter gradient accumulated and copied back. */
    private void deviceBackward(Backend backend, Tensor x, Tensor dx) {
        ensureRotation();
        float[] dR = memory.toHost(device.backward(backend, x, dx, rotationT)).toFloatArray();   // [stored, b, b]
        float[] q = memory.toHost(weight).toFloatArray();
        float[] dq = memory.toHost(grad).toFloatArray();
        int b = layout.blockSize();
        int n = layout.elements();
        for (int j = 0; j < layout.storedBlocks(); j++) {
            double[] gj = new double[b * b];
            for (int i = 0; i < b * b; i++) {
                gj[i] = dR[j * b * b + i];
            }
            double[] s = OftMath.skew(q, j * n, b);
            double[] dQ = settings.cayleyNeumann()
                    ? OftMath.neumannBackward(s, gj, b, settings.neumannTerms())
                    : OftMath.cayleyBackward(s, gj, b);
            OftMath.packGradient(dQ, b, dq, j * n);
        }
        memory.copy(Tensor.of(dq, grad.shape()), grad);
    }

    /** Rebuilds the rotation blocks if the parameter changed since they were built (coft-projecting it first). */
    private synchronized void ensureRotation() {
        Tensor w = memory.toHost(weight);   // the parameter itself for host memory, else a host copy
        if (built && MemorySegment.mismatch(w.segment(), w.byteOffset(), w.byteOffset() + w.byteSize(),
                builtFrom.segment(), builtFrom.byteOffset(), builtFrom.byteOffset() + builtFrom.byteSize()) == -1) {
            return;
        }
        int b = layout.blockSize();
        int n = layout.elements();
        int stored = layout.storedBlocks();
        float[] q = w.toFloatArray();
        if (settings.coft()) {
            double radius = settings.eps() / Math.sqrt(stored);
            boolean changed = false;
            for (int j = 0; j < stored; j++) {
                changed |= OftMath.project(q, j * n, n, radius);
            }
            if (changed) {
                w = Tensor.of(q, weight.shape());
                memory.copy(w, weight);
            }
        }
        float[] r = new float[stored * b * b];
        for (int j = 0; j < stored; j++) {
            double[] s = OftMath.skew(q, j * n, b);
            double[] rj = settings.cayleyNeumann() ? OftMath.neumann(s, b, settings.neumannTerms()) : OftMath.cayley(s, b);
            for (int i = 0; i < b * b; i++) {
                r[j * b * b + i] = (float) rj[i];
            }
        }
        rotation.copyFrom(Tensor.of(r, rotation.shape()));
        if (rotationT != null) {
            float[] rt = new float[r.length];   // [stored, b, b] each block transposed
            for (int j = 0; j < stored; j++) {
                for (int k = 0; k < b; k++) {
                    for (int c = 0; c < b; c++) {
                        rt[j * b * b + c * b + k] = r[j * b * b + k * b + c];
                    }
                }
            }
            memory.copy(Tensor.of(rt, rotationT.shape()), rotationT);
        }
        builtFrom.copyFrom(w);
        built = true;
    }
}
