package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Cublas;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.cuda.internal.KernelLibrary;
import org.orbitrl.kernels.cuda.internal.Launcher;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;

/**
 * What every group of CUDA operations shares: the device, the one stream all work is issued on,
 * the allocator, the kernel library, cuBLAS, reusable scratch buffers and the device error flag.
 * Package-private; {@link CudaBackend} owns it.
 */
final class CudaContext implements AutoCloseable {
    /** Scratch buffers, grown on demand and reused by later calls (all work is on one stream). */
    enum Scratch { X_BF16, DEQUANT_BF16, ATTENTION_ACC, ATTENTION_ML, ATTENTION_BACKWARD, ATTENTION_BF16, EXACT_DEQUANT, EXACT_PLANES, EXACT_X, EXACT_SPLITS, OFT_WORK, ROUTER_LOGITS, MOE_ACT, MOE_GATE, MOE_UP, X_F32, LORA_LO, DECODE_LAYER, NARROW_SPLITS }

    final CudaDevice device;
    final CudaStream stream;
    final CudaAllocator allocator;
    final KernelLibrary kernels;
    final Cublas cublas;
    final Tensor errorFlag; // i32 [4]: code, value low, value high, row
    /** Rows a ticketed launch may count at once ({@link #tickets}). */
    static final int TICKETS = 4096;
    final Tensor tickets;   // i32 [TICKETS]: per-row counters of kernels whose last block finishes a row; 0 between launches
    private final Tensor cublasWorkspace; // u8 [32 MiB]
    private final Map<Scratch, Tensor> scratch = new EnumMap<>(Scratch.class);
    private final boolean highPriority;
    private CudaStream side;             // created on first use: work that overlaps the stream's within one op
    private final List<CudaEvent> events = new ArrayList<>();

    CudaContext(CudaDevice device, KernelLibrary kernels) {
        this(device, kernels, false);
    }

    /** {@code highPriority}: the context's stream has the device's highest priority (see {@link CudaStream#CudaStream(boolean)}). */
    CudaContext(CudaDevice device, KernelLibrary kernels, boolean highPriority) {
        this.device = device;
        device.bind();
        this.highPriority = highPriority;
        this.stream = new CudaStream(highPriority);
        this.allocator = new CudaAllocator(device, stream);
        this.kernels = kernels;
        this.errorFlag = allocator.allocate(MemoryCategory.RUNTIME_RESERVE, DType.I32, 4);
        this.tickets = allocator.allocate(MemoryCategory.RUNTIME_RESERVE, DType.I32, TICKETS);
        this.cublasWorkspace = allocator.allocate(MemoryCategory.RUNTIME_RESERVE, DType.U8, Cublas.WORKSPACE_BYTES);
        this.cublas = new Cublas(stream.handle(), CudaAllocator.address(cublasWorkspace), Cublas.WORKSPACE_BYTES);
    }

    /**
     * A second stream of the stream's priority, for work that overlaps the stream's inside one op (which
     * forks to it and joins back through events before it returns, so that callers see one stream).
     */
    CudaStream sideStream() {
        if (side == null) {
            side = new CudaStream(highPriority);
        }
        return side;
    }

    /** A new event, closed with this context. */
    CudaEvent event() {
        CudaEvent e = new CudaEvent();
        events.add(e);
        return e;
    }

    /** A handle on {@code file.cu}'s kernel {@code name}; op classes take theirs once, at construction. */
    Kernel kernel(String file, String name) {
        return kernels.kernel(file, name);
    }

    /** Launches {@code kernel} on the stream with a 1-D grid. */
    void launch(Kernel kernel, long gridX, int blockX, Object... args) {
        Launcher.launch(kernel, stream.handle(), gridX, 1, blockX, 0, args);
    }

    /** Launches {@code kernel} on a 2-D grid. */
    void launch2d(Kernel kernel, long gridX, int gridY, int blockX, Object... args) {
        Launcher.launch(kernel, stream.handle(), gridX, gridY, blockX, 0, args);
    }

    /**
     * Launches {@code kernel} with {@code sharedBytes} of dynamic shared memory (above 48 KiB the
     * kernel is opted in to that size on its first such launch).
     */
    void launchShared(Kernel kernel, long gridX, int blockX, int sharedBytes, Object... args) {
        Launcher.launch(kernel, stream.handle(), gridX, 1, blockX, sharedBytes, args);
    }

    /** Launches {@code kernel} on a 2-D grid with {@code sharedBytes} of dynamic shared memory (as {@link #launchShared}). */
    void launch2dShared(Kernel kernel, long gridX, int gridY, int blockX, int sharedBytes, Object... args) {
        Launcher.launch(kernel, stream.handle(), gridX, gridY, blockX, sharedBytes, args);
    }

    /** A cooperative launch of a 1-D grid (every block resident at once; see {@link Launcher#launchCooperative}). */
    void launchCooperative(Kernel kernel, int gridX, int blockX, int sharedBytes, Object... args) {
        Launcher.launchCooperative(kernel, stream.handle(), gridX, blockX, sharedBytes, args);
    }

    /** Blocks for a grid-stride loop over n items: enough to fill the device, no more. */
    long gridFor(long n, int block) {
        long needed = (n + block - 1) / block;
        return Math.max(1, Math.min(needed, (long) device.multiprocessors() * 32));
    }

    /**
     * A scratch tensor of at least {@code elements}, viewed as [elements]; its contents are undefined.
     * Inside a step being measured or captured for replay it is a fresh allocation of the step (its
     * arena), so that a captured graph never refers to a shared buffer a later step may grow and free.
     */
    Tensor scratch(Scratch which, DType dtype, long elements) {
        if (which == Scratch.ROUTER_LOGITS) {
            Launcher.settleDeferred(); // a choice left to the next launches reads the logits this call may replace
        }
        if (allocator.stepScoped()) {
            return allocator.allocateUninitialized(MemoryCategory.ACTIVATIONS, dtype, Math.max(elements, 1024)).slice(0, 0, elements);
        }
        Tensor t = scratch.get(which);
        if (t == null || t.numel() < elements) {
            if (t != null) {
                allocator.freeUncaptured(t);   // captured steps have scratch of their own
            }
            MemoryCategory c = which == Scratch.DEQUANT_BF16 ? MemoryCategory.DEQUANT_BUFFERS : MemoryCategory.ACTIVATIONS;
            t = allocator.allocateUninitialized(c, dtype, Math.max(elements, 1024));
            scratch.put(which, t);
        }
        return t.slice(0, 0, elements);
    }

    /** Throws unless {@code t} lies in this device's memory. */
    Tensor dev(String what, Tensor t) {
        if (t == null) {
            throw new IllegalArgumentException(what + " is null");
        }
        if (!allocator.owns(t)) {
            throw new IllegalArgumentException(what + " " + t + " is not in the device memory of " + device
                    + "; copy it with CudaBackend.toDevice");
        }
        return t;
    }

    /** Device tensor of dtype {@code dt}, contiguous. */
    Tensor devContiguous(String what, Tensor t, DType dt) {
        dev(what, t);
        if (dt != null && t.dtype() != dt) {
            throw new IllegalArgumentException(what + " must be " + dt + ", got " + t);
        }
        return t.requireContiguous(what);
    }

    static int rows(Tensor t) {
        return Math.toIntExact(t.numel() / Math.max(1, t.dim(-1)));
    }

    static void sameShape(String op, Tensor a, Tensor b) {
        if (!Arrays.equals(a.shape(), b.shape())) {
            throw new IllegalArgumentException(op + ": shapes differ: " + a + " vs " + b);
        }
    }

    @Override
    public void close() {
        cublas.close();
        kernels.close();
        allocator.close();
        events.forEach(CudaEvent::close);
        if (side != null) {
            side.close();
        }
        stream.close();
    }
}
