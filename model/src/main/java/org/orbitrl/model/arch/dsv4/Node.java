package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * One value of the DeepSeek V4 computation (row-major f32) and, once backward has reached it, its gradient. Shapes are
 * given by the op that made it.
 *
 * <p>A value lives where the op that made it ran: on the host ({@code float[]}), or in a device allocator's memory (a
 * contiguous f32 tensor) when a device backend's operation made it; a layer input waiting for its backward under
 * offloading is a host tensor off the heap ({@link #onHost}). Each side is copied to the other at most once, the
 * first time an op there reads it ({@link #v} on the host, {@link #placed} on the device); values are never written
 * after their node is made, so both copies stay right. A gradient likewise accumulates where its senders run: host
 * contributions into an array, device ones into a tensor, and a reader on the other side moves it across once.
 */
final class Node {
    private final int size;
    private float[] v;                 // the host's copy, null until read there
    private Tensor host;               // or an f32 tensor in host memory off the heap (an input waiting there), or null
    private TensorAllocator hostCopier; // the allocator that may still be copying into host, or null
    private Tensor dev;                // the device's copy, null until made or placed there
    private TensorAllocator devIn;
    private boolean borrowed;          // dev is a view of memory its owner releases ({@link #borrowed})
    private float[] g;                 // the gradient on the host, or
    private Tensor dg;                 // the gradient in dgIn's memory (never both)
    private TensorAllocator dgIn;

    Node(float[] v) {
        this.v = v;
        this.size = v.length;
        Scratch.made(this);
    }

    private Node(Tensor t, TensorAllocator a) {
        if (t.dtype() != DType.F32 || !t.isContiguous()) {
            throw new IllegalArgumentException("a DeepSeek V4 value must be a contiguous f32 tensor, got " + t);
        }
        this.size = Math.toIntExact(t.numel());
        this.dev = t;
        this.devIn = a;
        Scratch.made(this);
    }

    /**
     * A value in host memory off the Java heap, a contiguous f32 tensor (a layer's input waiting for its backward)
     * that {@code copier} may still be copying into ({@link TensorAllocator#copyToHostAsync}): a device op copies it
     * there once ({@link #placed}, in order with that copy), a host op reads it into an array ({@link #v}) once the
     * copy is done.
     */
    static Node onHost(Tensor t, TensorAllocator copier) {
        if (t.dtype() != DType.F32 || !t.isContiguous()) {
            throw new IllegalArgumentException("a DeepSeek V4 value must be a contiguous f32 tensor, got " + t);
        }
        return new Node(t, Math.toIntExact(t.numel()), copier);
    }

    private Node(Tensor hostTensor, int size, TensorAllocator copier) {
        this.size = size;
        this.host = hostTensor;
        this.hostCopier = copier;
        Scratch.made(this);
    }

    /** A value made in {@code a}'s memory (a device allocator's): the node owns {@code t}. */
    static Node onDevice(TensorAllocator a, Tensor t) {
        return new Node(t, a);
    }

    /**
     * A value that is a view {@code t} of memory of {@code a} another holder owns (a sequence's kept rows,
     * {@link StateRows}): releasing the node leaves {@code t} alone; it is valid until its owner changes it.
     */
    static Node borrowed(TensorAllocator a, Tensor t) {
        Node n = new Node(t, a);
        n.borrowed = true;
        return n;
    }

    static Node zeros(int n) {
        return new Node(new float[n]);
    }

    int size() {
        return size;
    }

    /** The values on the host, read back from the device at the first ask where the node was made there. */
    float[] v() {
        if (v == null) {
            if (host != null && hostCopier != null) {
                hostCopier.awaitCopies();
            }
            v = host != null ? host.toFloatArray() : devIn.toFloats(dev);
        }
        return v;
    }

    /** Whether the value is in the memory of a device allocator (where the next device op reads it without a copy). */
    boolean onDevice() {
        return dev != null && !devIn.hostMemory();
    }

    /**
     * The value as an f32 tensor of {@code shape} in {@code allocator}'s memory: the node's own tensor where it is
     * there, else one copy kept for every later reader (q_a and kv, both compressor projections, an expert's gate and
     * up read the same input).
     */
    Tensor placed(TensorAllocator allocator, long... shape) {
        if (dev == null || devIn != allocator) {
            dev = host != null && v == null ? allocator.upload(org.orbitrl.kernels.MemoryCategory.ACTIVATIONS, host.reshape(shape))
                    : Ops.device(allocator, v(), shape);
            devIn = allocator;
            borrowed = false;   // the copy is the node's own
        }
        long n = 1;
        for (long s : shape) {
            n *= s;
        }
        if (n != size) {
            throw new IllegalArgumentException("a value of " + size + " elements viewed as " + java.util.Arrays.toString(shape));
        }
        return java.util.Arrays.equals(dev.shape(), shape) ? dev : dev.reshape(shape);
    }

    /**
     * The value's own tensor in {@code allocator}'s memory as {@code shape}, taken from the node (which holds no value
     * afterwards: a later read fails) for a caller that writes it in place; null, taking nothing, where the node has no
     * such tensor to give (a host value, a copy kept beside a host one, a borrowed view, another allocator's).
     */
    Tensor take(TensorAllocator allocator, long... shape) {
        if (dev == null || devIn != allocator || borrowed || v != null || host != null) {
            return null;
        }
        Tensor t = placed(allocator, shape);
        dev = null;
        return t;
    }

    /** True once some consumer has sent a gradient here. */
    boolean hasGrad() {
        return g != null || dg != null;
    }

    /** The gradient on the host, allocated (zero) on first use; a device gradient is read back once. */
    float[] grad() {
        if (g == null) {
            if (dg != null) {
                g = dgIn.toFloats(dg);
                dgIn.release(dg);
                dg = null;
            } else {
                g = new float[size];
            }
        }
        return g;
    }

    /** A node of the same value (shared, never written) and no gradient: a recomputed layer's input. */
    Node fresh() {
        if (host != null) {
            return new Node(host, size, hostCopier);
        }
        Node n = v != null ? new Node(v) : new Node(dev, devIn);
        if (v != null && dev != null) {
            n.dev = dev;
            n.devIn = devIn;
        }
        n.borrowed = borrowed;
        return n;
    }

    /** Takes over {@code from}'s gradient, where it is (this node has none yet): a recomputed layer's output's. */
    void takeGrad(Node from) {
        if (hasGrad() || from.size != size) {
            throw new IllegalStateException("a gradient of " + from.size + " values for a node of " + size
                    + (hasGrad() ? " that has one" : ""));
        }
        g = from.g;
        dg = from.dg;
        dgIn = from.dgIn;
        from.g = null;
        from.dg = null;
    }

    /**
     * Releases to {@code a} the value's and the gradient's tensors in its memory (the node is not read afterwards,
     * except through a host copy it already has).
     */
    void release(TensorAllocator a) {
        if (dev != null && devIn == a && !borrowed) {
            a.release(dev);
            dev = null;
        }
        if (dg != null && dgIn == a) {
            a.release(dg);
            dg = null;
        }
    }

    /** Releases to {@code a} the value's tensor in its memory, keeping the gradient (and any host copy of the value). */
    void releaseValue(TensorAllocator a) {
        if (dev != null && devIn == a && !borrowed) {
            a.release(dev);
            dev = null;
        }
    }

    /** Forgets the gradient (a device one released): its step has sent it on. */
    void dropGrad() {
        if (dg != null) {
            dgIn.release(dg);
        }
        dg = null;
        g = null;
    }

    /** Takes {@code d} as the gradient where none has flowed here yet (its caller gives the array up); else false. */
    boolean adoptGrad(float[] d) {
        if (hasGrad() || d.length != size) {
            return false;
        }
        g = d;
        return true;
    }

    /** The gradient on the host, or null if nothing flowed here. */
    float[] gradOrNull() {
        return hasGrad() ? grad() : null;
    }

    /**
     * The gradient as a tensor of {@code shape} in {@code a}'s memory (a host gradient copied there once, which then
     * accumulates there), or null if nothing flowed here.
     */
    Tensor gradPlaced(TensorAllocator a, long... shape) {
        if (!hasGrad()) {
            return null;
        }
        if (dg == null || dgIn != a) {
            dg = Ops.device(a, grad(), shape);
            dgIn = a;
            g = null;
        }
        return java.util.Arrays.equals(dg.shape(), shape) ? dg : dg.reshape(shape);
    }

    /**
     * Adds {@code d}, a tensor of {@code b}'s memory the caller gives up, into the gradient: the first gradient to reach
     * the node is {@code d} itself; later ones are added where the gradient is (on the device by {@code b}, or read back
     * and added on the host where host senders came first).
     */
    void accDevice(Backend b, Tensor d) {
        TensorAllocator a = b.allocator();
        if (d.numel() != size || !d.isContiguous()) {
            throw new IllegalArgumentException("a gradient must be a contiguous tensor of " + size + " elements, got " + d);
        }
        if (!hasGrad()) {
            dg = d;
            dgIn = a;
            return;
        }
        if (dg != null && dgIn == a) {
            b.add(dg, d.reshape(dg.shape()), dg);
            a.release(d);
            return;
        }
        Ops.accOwned(this, a.toFloats(d));
        a.release(d);
    }
}
