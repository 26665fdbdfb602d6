package org.orbitrl.model.nn;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.util.ArrayList;
import java.util.List;

/**
 * A frozen linear layer {@code y = x·Wᵀ (+ b)} with an optional adapter hook. The base weight and
 * bias never train; an {@link AdapterHook} may transform the input the base weight sees (OFT) and
 * add a delta on top of its output (LoRA) in forward, and takes its own gradients in backward.
 */
public final class Linear {
    private final String name;
    private final Weight weight;   // [out, in]
    private final Tensor bias;     // [out] or null
    private AdapterHook adapter;

    public Linear(String name, Weight weight, Tensor bias) {
        this.name = name;
        this.weight = weight;
        this.bias = bias;
        if (bias != null && bias.numel() != weight.rows()) {
            throw new IllegalArgumentException(name + ": bias " + bias + " does not match " + weight.rows() + " outputs");
        }
    }

    /** The same frozen weight and bias in a new layer with no adapter. */
    public Linear view() {
        return new Linear(name, weight, bias);
    }

    /** The module path, as Hugging Face names it ({@code model.layers.0.self_attn.q_proj}). */
    public String name() {
        return name;
    }

    public Weight weight() {
        return weight;
    }

    public Tensor bias() {
        return bias;
    }

    public int in() {
        return Math.toIntExact(weight.cols());
    }

    public int out() {
        return Math.toIntExact(weight.rows());
    }

    public AdapterHook adapter() {
        return adapter;
    }

    public void setAdapter(AdapterHook adapter) {
        this.adapter = adapter;
    }

    /**
     * y [M, out] = x [M, in] · Wᵀ + b (+ adapter delta); a low-rank adapter's term with the base product in the backend's
     * fused form ({@link Backend#matmulLowRank}) where it has one for the call.
     */
    public void forward(Backend backend, Tensor x, Tensor y) {
        if (adapter != null && forwardLowRank(backend, x, new Linear[]{this}, new Tensor[]{y})) {
            return;
        }
        forwardWith(weight, backend, x, y);
    }

    /**
     * {@code ys[i] = layers[i](x)} for layers that read the same x (an attention block's q, k and v), the numbers of each
     * layer's {@link #forward}: when every base weight is dense and no adapter transforms the input, the base products
     * go through one {@link Backend#matmulShared}, and the A products of the adapters that are low-rank ({@link
     * AdapterHook#lowRank}) through another, each then adding its {@code scale · (x·Aᵀ)·Bᵀ} (all of it in the backend's
     * fused form, {@link Backend#matmulLowRank}, where it has one for the call); otherwise each layer runs on its own.
     */
    public static void forwardShared(Backend backend, Tensor x, Linear[] layers, Tensor[] ys) {
        if (layers.length != ys.length) {
            throw new IllegalArgumentException("forwardShared: " + layers.length + " layers for " + ys.length + " outputs");
        }
        Tensor[] ws = new Tensor[layers.length];
        AdapterHook[] hooks = new AdapterHook[layers.length];
        for (int i = 0; i < layers.length; i++) {
            AdapterHook h = layers[i].adapter;
            hooks[i] = h != null && h.enabled() ? h : null;
            if (!(layers[i].weight instanceof Weight.Dense d) || (hooks[i] != null && hooks[i].transformsInput())) {
                for (int j = 0; j < layers.length; j++) {
                    layers[j].forward(backend, x, ys[j]);
                }
                return;
            }
            ws[i] = d.w();
        }
        if (forwardLowRank(backend, x, layers, ys)) {
            return;
        }
        backend.matmulShared(x, ws, ys);
        List<Integer> lowRank = new ArrayList<>();
        AdapterHook.LowRank[] terms = new AdapterHook.LowRank[layers.length];
        for (int i = 0; i < layers.length; i++) {
            if (layers[i].bias != null) {
                backend.addBias(ys[i], layers[i].bias);
            }
            terms[i] = hooks[i] == null ? null : hooks[i].resolved().lowRank();
            if (terms[i] != null) {
                lowRank.add(i);
            } else if (hooks[i] != null) {
                hooks[i].forward(backend, x, ys[i]);
            }
        }
        if (lowRank.isEmpty()) {
            return;
        }
        TensorAllocator al = backend.allocator();
        int m = Math.toIntExact(x.numel() / x.size(-1));
        Tensor[] as = new Tensor[lowRank.size()];
        Tensor[] xas = new Tensor[lowRank.size()];
        for (int j = 0; j < as.length; j++) {
            AdapterHook.LowRank t = terms[lowRank.get(j)];
            as[j] = t.a();
            xas[j] = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, m, t.a().size(0));   // [M, r]
        }
        backend.matmulShared(x, as, xas);
        for (int j = 0; j < as.length; j++) {
            AdapterHook.LowRank t = terms[lowRank.get(j)];
            backend.matmulAxpy(xas[j], t.b(), t.scale(), ys[lowRank.get(j)]);   // y += s · xa · Bᵀ
            al.release(xas[j]);
        }
    }

    /**
     * The layers' base products and low-rank adapter terms in the backend's fused form where it has one for this call
     * ({@link Backend#matmulLowRank}), then their biases: every base weight dense, every enabled adapter low-rank, at
     * least one of them. False, with nothing written, otherwise.
     */
    private static boolean forwardLowRank(Backend backend, Tensor x, Linear[] layers, Tensor[] ys) {
        Tensor[] ws = new Tensor[layers.length];
        Backend.LowRankTerm[] terms = new Backend.LowRankTerm[layers.length];
        boolean any = false;
        for (int i = 0; i < layers.length; i++) {
            if (!(layers[i].weight instanceof Weight.Dense d)) {
                return false;
            }
            ws[i] = d.w();
            AdapterHook h = layers[i].adapter;
            if (h != null && h.enabled()) {
                AdapterHook.LowRank t = h.transformsInput() ? null : h.resolved().lowRank();
                if (t == null) {
                    return false;
                }
                terms[i] = new Backend.LowRankTerm(t.a(), t.b(), t.scale());
                any = true;
            }
        }
        if (!any || !backend.matmulLowRank(x, ws, terms, ys)) {
            return false;
        }
        for (int i = 0; i < layers.length; i++) {
            if (layers[i].bias != null) {
                backend.addBias(ys[i], layers[i].bias);
            }
        }
        return true;
    }

    /**
     * As {@link #forward}, with {@code w} standing in for the base weight: the same matrix held
     * differently (a dequantized copy in a reused chunk buffer).
     */
    public void forwardWith(Weight w, Backend backend, Tensor x, Tensor y) {
        AdapterHook a = adapter != null && adapter.enabled() ? adapter : null;
        Tensor in = a != null ? a.baseInput(backend, x) : x;   // [M, in]
        w.forward(backend, in, y);
        if (in != x) {
            backend.allocator().release(in);   // the hook's scratch copy: dead after the base product
        }
        if (bias != null) {
            backend.addBias(y, bias);
        }
        if (a != null) {
            a.forward(backend, x, y);
        }
    }

    /**
     * Backward through the frozen layer: dx [M, in] = dy [M, out] · W (overwritten), then the
     * adapter's part (see {@link AdapterHook#backward}); the adapter accumulates its own parameter
     * gradients from x [M, in]. No gradient of W or the bias exists.
     */
    public void backward(Backend backend, Tensor x, Tensor dy, Tensor dx) {
        backwardWith(weight, backend, x, dy, dx);
    }

    /** As {@link #backward}, with {@code w} standing in for the base weight. */
    public void backwardWith(Weight w, Backend backend, Tensor x, Tensor dy, Tensor dx) {
        AdapterHook a = adapter != null && adapter.enabled() ? adapter : null;
        w.backward(backend, dy, dx);
        if (a != null) {
            a.backward(backend, x, dy, dx);
        }
    }

    /**
     * dx [M, in] += the gradient with respect to x: the base product into a temporary added to dx,
     * then an additive adapter's share accumulated into dx (the order a grouped expert block takes, whose
     * base product accumulates into its input gradient); an adapter that transforms the input (OFT) maps
     * the temporary first.
     */
    public void backwardAccumulateWith(Weight w, Backend backend, Tensor x, Tensor dy, Tensor dx) {
        AdapterHook a = adapter != null && adapter.enabled() ? adapter : null;
        TensorAllocator al = backend.allocator();
        Tensor tmp = al.allocate(MemoryCategory.ACTIVATIONS, DType.F32, dx.shape());   // [M, in]
        w.backward(backend, dy, tmp);
        if (a != null && a.transformsInput()) {
            a.backward(backend, x, dy, tmp);
            backend.add(dx, tmp, dx);
        } else {
            backend.add(dx, tmp, dx);
            if (a != null) {
                a.backward(backend, x, dy, dx);
            }
        }
        al.release(tmp);
    }

    @Override
    public String toString() {
        return "Linear[" + name + ", " + weight.rows() + "x" + weight.cols() + (bias != null ? ", bias" : "") + "]";
    }

    /**
     * An adapter attached to a linear layer. The layer computes
     * {@code y = baseInput(x)·Wᵀ + b}, then {@link #forward} adds the adapter's delta: LoRA keeps
     * the input and adds {@code scale·(x·Aᵀ)·Bᵀ}; OFT rotates the input ({@code x·R}) and adds nothing.
     */
    public interface AdapterHook {
        boolean enabled();

        /**
         * The input the base weight multiplies, [M, in]: x itself (the default), or a transformed
         * copy in scratch memory (OFT's block-diagonal rotation x·R), a new allocation of the
         * backend's allocator that the layer releases once the base product is issued.
         */
        default Tensor baseInput(Backend backend, Tensor x) {
            return x;
        }

        /** Whether {@link #baseInput} transforms x (OFT), so that {@link #backward} maps dx rather than adding to it. */
        default boolean transformsInput() {
            return false;
        }

        /** Accumulates the adapter's contribution into y [M, out] given the layer input x [M, in]. */
        void forward(Backend backend, Tensor x, Tensor y);

        /**
         * The delta as a low-rank product when {@link #forward} is exactly {@code y += scale · (x·Aᵀ)·Bᵀ} through {@link
         * Backend#matmul} and {@link Backend#matmulAxpy} (an enabled LoRA), so that layers reading the same x can share the
         * A products ({@link Linear#forwardShared}); null otherwise (the default).
         */
        default LowRank lowRank() {
            return null;
        }

        /** A [r, in] and B [out, r] f32 and the scale of a low-rank delta. */
        record LowRank(Tensor a, Tensor b, float scale) {
        }

        /**
         * Given the layer input x [M, in] and output gradient dy [M, out], with dx [M, in] holding
         * dy·W on entry (the gradient with respect to {@link #baseInput}): turns dx into the
         * gradient with respect to x (an additive adapter accumulates its share into it; OFT maps it
         * through Rᵀ) and accumulates the adapter's own parameter gradients.
         */
        void backward(Backend backend, Tensor x, Tensor dy, Tensor dx);

        /**
         * The hook that does the work now: this one, or for a hook that dispatches to others (an adapter slot's) the
         * one it dispatches to at this moment, resolved in turn. Lets a block that runs many layers' adapters at once
         * ({@code ExpertLora}) reach their tensors.
         */
        default AdapterHook resolved() {
            return this;
        }
    }
}
