package org.orbitrl.kernels.cuda;

import org.bytedeco.javacpp.Pointer;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cuda.internal.DevicePointer;
import org.orbitrl.kernels.cuda.internal.Launcher;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.EnumMap;
import java.util.Map;
import java.util.TreeMap;

import static org.bytedeco.cuda.global.cudart.*;

/**
 * Device memory from the device's stream-ordered pool ({@code cudaMallocAsync} on the allocator's
 * stream, so a free never synchronises the device; {@code cudaMalloc} while the stream is being
 * captured into a graph), never managed memory, accounted by
 * {@link MemoryCategory}: live and peak bytes per category, and the total. Allocations are
 * zero-filled on the owning stream ({@link #allocateUninitialized}'s are not filled: poisoned under
 * {@link TensorAllocator#poisonUninitialized}). Memory lives until {@link #free} or {@link #close}, except
 * that allocations of the per-step categories {@link MemoryCategory#ACTIVATIONS} and
 * {@link MemoryCategory#LOGITS} are also released once no tensor refers to their memory any more
 * (the model code drops its temporaries, as on the host): the garbage collector reports them, and
 * the next {@link #allocate} on the owning thread frees them, so that any kernel that used them was
 * issued before and the reuse is ordered after it on the stream. A device allocation that fails
 * for lack of memory runs a collection and retries once. Keep a reference to an activation for as
 * long as device work captured for later replay uses it.
 *
 * <p><b>Release at last use.</b> The model code does not wait for the collector for its big
 * temporaries: {@link #release} frees an activation or logits allocation as soon as its last use is
 * issued (on the stream, after that use). The collector remains the net for what is not released
 * explicitly; since the Java heap barely grows while device memory fills, a collection is also
 * requested once the per-step bytes allocated since the last such request and still live exceed a
 * quarter of the device memory that was free when the allocator was made
 * ({@link #collectionThreshold}).
 *
 * <p><b>Reuse on the host.</b> A released activation or logits block of up to {@link #REUSE_BLOCK_BYTES}
 * is kept, {@link #REUSE_BYTES} in all, for the next allocation of its size, which takes it without a
 * CUDA call: a decode step's few hundred small temporaries each step, where {@code cudaMallocAsync} and
 * {@code cudaFreeAsync} cost a host thread more than the step's launches. The reuse is ordered on the
 * stream as the pool's would be (the release is issued after the block's last use there, the reuse
 * after the release). The pool keeps freed memory anyway (its release threshold is unbounded), but a
 * kept block serves only its own size and only this allocator (each backend on a device has its own):
 * hence the caps, and {@link #keptBytes} beside the live bytes. An allocation that finds the device
 * full hands this allocator's kept blocks back to the pool before it retries.
 *
 * <p><b>Device tensors.</b> A tensor from this allocator is an ordinary {@link Tensor} whose
 * segment spans the device allocation ({@link #deviceSegment}). That segment is never
 * dereferenced on the host: its scope is closed on purpose, so a host read or write through it
 * ({@code getFloat}, {@code toFloatArray}, {@code copyFrom}) throws {@link IllegalStateException}
 * instead of touching a device address. Views (slice, select, reshape, transpose) work as on the
 * host; only their address arithmetic is used. Copy with {@link CudaBackend#toDevice} and
 * {@link CudaBackend#toHost}; a Java float array goes to the device and back through 64 MiB of page-locked host
 * memory the allocator keeps ({@link #uploadFloats}, {@link #toFloats}; {@link PinnedStaging}).
 *
 * <p><b>Captured steps.</b> While {@link CudaBackend#captureStep} records a step, every allocation
 * comes from an arena owned by the step (one device allocation made before the capture, sized by a
 * measuring run of the same step: see {@link CaptureArena}), a release hands the block back to the
 * arena for the step's later allocations, and an upload, a host read or a host copy throws
 * {@link org.orbitrl.kernels.NotCapturableException}. Arena memory is freed with its step. While
 * any captured step lives, {@link #free} keeps the memory (a kernel's reused buffer a step refers
 * to) until the last step is freed.
 */
public final class CudaAllocator implements TensorAllocator, AutoCloseable {
    /** Allocation granularity (and alignment) in bytes. */
    public static final long ALIGN = 256;
    /** Released per-step bytes kept for reuse, at most ({@code -Dorbit.cuda.reuseBytes}; 0: none kept). */
    static final long REUSE_BYTES = Long.getLong("orbit.cuda.reuseBytes", 256L << 20);
    /** The largest block kept for reuse ({@code -Dorbit.cuda.reuseBlockBytes}). */
    static final long REUSE_BLOCK_BYTES = Long.getLong("orbit.cuda.reuseBlockBytes", 64L << 20);
    /** {@link TensorAllocator#poisonUninitialized}, read once: not a property lookup an allocation. */
    private static final boolean POISON = TensorAllocator.poisonUninitialized();

    // async: from the device's stream-ordered pool (cudaMallocAsync), freed on the stream without a
    // device-wide synchronisation; else cudaMalloc (while the stream is being captured into a graph)
    // size: the bytes asked (bytes: allocated); owner: the segment its tensors share, weakly held so
    // that the collector still finds it unreachable; generation: collections requested before it was made
    // arena: the captured step whose arena holds it (null: its own device allocation); offset: its place there
    private record Block(long address, long bytes, long size, MemoryCategory category, boolean async,
                         java.lang.ref.WeakReference<MemorySegment> owner, long generation, CaptureMemory arena, long offset) {
    }

    /** The device allocation of one captured step's arena and the plan that hands it out. */
    static final class CaptureMemory {
        final long base;
        final long bytes;
        final CaptureArena plan;
        // host memory the step's captured copies read at every replay (DeviceTable's tables): kept as long as the step
        final java.util.List<Object> held = new java.util.ArrayList<>();

        CaptureMemory(long base, long bytes) {
            this.base = base;
            this.bytes = bytes;
            this.plan = new CaptureArena(bytes);
        }
    }

    /** Every allocator not yet closed: where a copy finds a source of another GPU's memory. */
    private static final java.util.Set<CudaAllocator> LIVE = java.util.concurrent.ConcurrentHashMap.newKeySet();

    private final CudaDevice device;
    private final CudaStream stream;
    private final boolean ownsStream;   // made by sideStreamOf: closed with this allocator
    /**
     * Host-device copies of at least this many bytes go through the page-locked staging buffer ({@link PinnedStaging}):
     * a pageable copy moves large tensors at a fraction of the link's speed. {@code -Dorbit.cuda.stagedCopyBytes=N} sets
     * it ({@code CopyBandwidthProbe} measures both ways).
     */
    static final long STAGED_BYTES = Long.getLong("orbit.cuda.stagedCopyBytes", 1L << 20);
    private final PinnedStaging pinned;   // float arrays to and from the device
    private final PinnedHostTensors pinnedHost = new PinnedHostTensors();   // allocatePinnedHost's tensors
    private final TreeMap<Long, Block> blocks = new TreeMap<>();
    private final Map<MemoryCategory, long[]> live = new EnumMap<>(MemoryCategory.class); // {live, peak}
    private static final java.lang.ref.Cleaner CLEANER = java.lang.ref.Cleaner.create();
    private static final java.util.Set<MemoryCategory> RELEASED_WHEN_UNREACHABLE =
            java.util.EnumSet.of(MemoryCategory.ACTIVATIONS, MemoryCategory.LOGITS, MemoryCategory.COMM_BUFFERS);
    private static final int CUDA_ERROR_MEMORY_ALLOCATION = 2;
    // blocks whose tensors the collector found unreachable; freed by the owning thread in allocate()
    private final java.util.concurrent.ConcurrentLinkedQueue<Block> unreachable = new java.util.concurrent.ConcurrentLinkedQueue<>();
    private final java.util.List<Block> deferred = new java.util.ArrayList<>(); // pool blocks freed during a capture
    private volatile CudaAllocator shared;
    private CaptureArena measuring;                 // the plan a measuring run of a step builds, else null
    private Map<Long, Long> measured;               // address -> offset in that plan of the run's allocations
    private CaptureMemory capture;                  // the arena a step being captured allocates from, else null
    private final java.util.List<CaptureMemory> arenas = new java.util.ArrayList<>(); // live arenas
    private final java.util.List<Block> retired = new java.util.ArrayList<>(); // freed while captured steps live
    // released per-step blocks: device addresses kept for the next allocation of their size
    private final ReusableBlocks reusable = new ReusableBlocks(REUSE_BYTES, REUSE_BLOCK_BYTES);
    private long capturedZeroFills;   // zero fills issued into captured steps (a memset node each, run at every replay)
    private long liveTotal;
    private long peakTotal;
    private boolean closed;
    private final long collectionThreshold;
    private long generation;          // collections requested by the threshold so far
    private long sinceCollection;     // live per-step bytes allocated in the current generation
    // per-category peaks by allocating call site, under -Dorbit.cuda.peakSites=true; null (no cost) otherwise
    private final PeakSites sites = PeakSites.enabled() ? new PeakSites(java.util.Set.of(CudaAllocator.class.getName(),
            PeakSites.class.getName(), CudaContext.class.getName(), CudaBackend.class.getName(),
            TensorAllocator.class.getName(), "org.orbitrl.kernels.OpProfiler")) : null;

    public CudaAllocator(CudaDevice device, CudaStream stream) {
        this(device, stream, false);
    }

    private CudaAllocator(CudaDevice device, CudaStream stream, boolean ownsStream) {
        this.device = device;
        this.stream = stream;
        this.ownsStream = ownsStream;
        this.pinned = new PinnedStaging(stream);
        LIVE.add(this);
        for (MemoryCategory c : MemoryCategory.values()) {
            live.put(c, new long[2]);
        }
        device.bind();
        // the pool keeps freed memory for reuse instead of returning it at every synchronisation
        CudaCheck.check(cudaDeviceGetDefaultMemPool(pool, device.index()), "cudaDeviceGetDefaultMemPool", device);
        CudaCheck.check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold,
                new org.bytedeco.javacpp.LongPointer(1).put(Long.MAX_VALUE)), "cudaMemPoolSetAttribute release threshold");
        this.collectionThreshold = Math.max(ALIGN, device.memoryInfo()[0] / 4);
    }

    /**
     * Live activation and logits bytes allocated since the last collection this allocator requested
     * above which it requests another before allocating: a quarter of the device memory free when
     * it was made.
     */
    public long collectionThreshold() {
        return collectionThreshold;
    }

    private final org.bytedeco.cuda.cudart.CUmemPoolHandle_st pool = new org.bytedeco.cuda.cudart.CUmemPoolHandle_st();

    /**
     * Lets tensors of {@code other} (an allocator of the same device, e.g. the frozen weights another
     * backend loaded) pass this allocator's {@link #owns} checks, so that this allocator's backend
     * reads them in place. They are never freed here. The caller orders their writes before the
     * reads (the weights are loaded and synchronised before they are shared).
     */
    public void share(CudaAllocator other) {
        if (other == this || other.device.index() != device.index()) {
            throw new IllegalArgumentException("share: " + other.device + " is not another allocator of " + device);
        }
        this.shared = other;
    }

    /**
     * An allocator through which another thread copies into {@code memory}'s tensors (as {@link #share} lets it) on a
     * stream of its own, made here and closed with it, so that nothing is enqueued on {@code memory}'s stream: the thread
     * computing there may be capturing a graph meanwhile, and work enqueued on a capturing stream from another thread
     * joins the graph instead of running (an adapter version published into a rollout engine's idle slot while the
     * engine captures a decode step). Its copies are complete at {@link #synchronize}; the caller orders them after the
     * last reads of the tensors they overwrite.
     */
    public static CudaAllocator sideStreamOf(CudaAllocator memory) {
        memory.device.bind();
        CudaStream s = new CudaStream();
        try {
            CudaAllocator a = new CudaAllocator(memory.device, s, true);
            a.share(memory);
            return a;
        } catch (RuntimeException e) {
            s.close();
            throw e;
        }
    }

    /** Waits for the work this allocator enqueued on its stream (its copies) to complete. */
    public void synchronize() {
        device.bind();
        stream.synchronize();
    }

    private boolean capturing() {
        int[] status = new int[1];
        CudaCheck.check(cudaStreamIsCapturing(stream.handle(), status), "cudaStreamIsCapturing");
        return status[0] != cudaStreamCaptureStatusNone;
    }

    /**
     * A segment of {@code bytes} at device address {@code address} that the host cannot access:
     * reads and writes through it throw {@link IllegalStateException}; its address and size work.
     * It is a slice of {@link #DEVICE_SPACE}, whose scope was closed once: closing a shared arena
     * for every allocation cost a handshake with every thread of the JVM (tens of microseconds an
     * allocation, most of an eager step's host time).
     */
    public static MemorySegment deviceSegment(long address, long bytes) {
        return DEVICE_SPACE.asSlice(address, bytes);
    }

    /** The whole address space in a closed scope: every device segment is a slice of it. */
    private static final MemorySegment DEVICE_SPACE = closedAddressSpace();

    private static MemorySegment closedAddressSpace() {
        Arena scope = Arena.ofShared();
        MemorySegment s = MemorySegment.NULL.reinterpret(Long.MAX_VALUE, scope, null);
        scope.close();
        return s;
    }

    /** Device address of the tensor's first element. */
    public static long address(Tensor t) {
        return t.segment().address() + t.byteOffset();
    }

    @Override
    public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
        return allocate(category, dtype, shape, true);
    }

    /** As {@link #allocate}, without the zero fill (no memset issued): the caller's next operation writes it whole. */
    @Override
    public Tensor allocateUninitialized(MemoryCategory category, DType dtype, long... shape) {
        return allocate(category, dtype, shape, false);
    }

    private synchronized Tensor allocate(MemoryCategory category, DType dtype, long[] shape, boolean zero) {
        if (closed) {
            throw new IllegalStateException("allocator of " + device + " is closed");
        }
        long n = 1;
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            }
            n = Math.multiplyExact(n, d);
        }
        long bytes = Math.max(ALIGN, (Math.multiplyExact(n, dtype.bytes()) + ALIGN - 1) / ALIGN * ALIGN);
        device.bind();
        if (capture != null) {
            return allocateInArena(category, dtype, shape, n, bytes, zero);
        }
        boolean perStep = RELEASED_WHEN_UNREACHABLE.contains(category);
        if (perStep && sinceCollection + bytes > collectionThreshold) {
            generation++;
            sinceCollection = 0;
            collectUnreachable();
        }
        releaseUnreachable();
        boolean async = !capturing();
        long address = async ? reusable.take(bytes) : 0;
        if (address == 0) {
            Pointer p = new Pointer();
            int err = async ? cudaMallocAsync(p, bytes, stream.handle()) : cudaMalloc(p, bytes);
            if (err == CUDA_ERROR_MEMORY_ALLOCATION) {
                cudaGetLastError(); // clear the (non-sticky) error before retrying
                collectUnreachable();
                if (async) {
                    freeReusable();   // after the collection: the blocks it released were kept too
                }
                p = new Pointer();
                err = async ? cudaMallocAsync(p, bytes, stream.handle()) : cudaMalloc(p, bytes);
            }
            if (err != 0) {
                CudaCheck.check(err, "cudaMalloc", category, dtype + Arrays.toString(shape), bytes + " bytes",
                        liveTotal + " bytes live on " + device);
            }
            address = p.address();
        }
        fill(address, bytes, dtype, zero);
        MemorySegment segment = deviceSegment(address, bytes);
        Block block = new Block(address, bytes, Math.multiplyExact(n, dtype.bytes()), category, async,
                new java.lang.ref.WeakReference<>(segment), generation, null, 0);
        blocks.put(address, block);
        if (measuring != null) {
            measured.put(address, measuring.take(bytes));
        }
        if (perStep) {
            sinceCollection += bytes;
        }
        long[] c = live.get(category);
        c[0] += bytes;
        c[1] = Math.max(c[1], c[0]);
        liveTotal += bytes;
        peakTotal = Math.max(peakTotal, liveTotal);
        if (sites != null) {
            sites.allocated(address, category, bytes, sites.callSite());
        }
        if (perStep) {
            // every view of the tensor shares this segment object: it is unreachable when they all are
            java.util.Queue<Block> q = unreachable;
            CLEANER.register(segment, () -> q.add(block));
        }
        return Tensor.wrap(segment, dtype, shape);
    }

    // an allocation of the step being captured: the next block of its arena's plan, zero-filled by a captured memset
    // (with zero; else none, or the poison's)
    private Tensor allocateInArena(MemoryCategory category, DType dtype, long[] shape, long n, long bytes, boolean zero) {
        long off = capture.plan.take(bytes);
        if (off < 0) {
            throw new org.orbitrl.kernels.NotCapturableException("allocation of " + bytes + " bytes (" + category + " " + dtype
                    + Arrays.toString(shape) + ") beyond the step's arena of " + capture.bytes
                    + " bytes: the step allocated differently while captured than in its measuring run");
        }
        long address = capture.base + off;
        fill(address, bytes, dtype, zero);
        if (zero) {
            capturedZeroFills++;
        }
        MemorySegment segment = deviceSegment(address, bytes);
        blocks.put(address, new Block(address, bytes, Math.multiplyExact(n, dtype.bytes()), category, false,
                new java.lang.ref.WeakReference<>(segment), generation, capture, off));
        return Tensor.wrap(segment, dtype, shape);
    }

    /**
     * Fills a new allocation on the stream: zeros (zero), else nothing, or under
     * {@link TensorAllocator#poisonUninitialized} {@link TensorAllocator#poison}'s values (NaN; the most negative
     * integer), 4, 2 or 1 bytes a word as the dtype's elements.
     */
    private void fill(long address, long bytes, DType dtype, boolean zero) {
        int err;
        if (zero) {
            err = cuMemsetD32Async(address, 0, bytes / 4, stream.handle());   // bytes: a multiple of ALIGN
        } else if (!POISON) {
            return;
        } else if (dtype.bytes() >= 4) {
            err = cuMemsetD32Async(address, dtype.isFloatingPoint() ? 0x7fc00000 : 0x80000000, bytes / 4, stream.handle());
        } else if (dtype.bytes() == 2) {
            err = cuMemsetD16Async(address, (short) (dtype == DType.F16 ? 0x7e00 : 0x7fc0), bytes / 2, stream.handle());
        } else {
            err = cuMemsetD8Async(address, (byte) (dtype.isFloatingPoint() ? 0x7f : 0x80), bytes, stream.handle());
        }
        if (err != 0) {
            CudaCheck.driver(err, zero ? "cuMemsetD32Async (zero fill)" : "cuMemsetAsync (poison fill)", bytes + " bytes", dtype);
        }
    }

    /** Hands every kept block back to the pool (on the stream). */
    private void freeReusable() {
        reusable.drain(address -> {
            int err = cudaFreeAsync(new DevicePointer(address), stream.handle());
            if (err != 0) {
                CudaCheck.check(err, "cudaFreeAsync", "a kept block at 0x" + Long.toHexString(address));
            }
        });
    }

    /**
     * Zero fills captured into steps so far: each a memset node that every replay of its step runs (a decode step's
     * allocations take {@link #allocateUninitialized} where their first operation writes them whole).
     */
    public synchronized long capturedZeroFills() {
        return capturedZeroFills;
    }

    /** Bytes of released blocks kept for reuse (not live; still the device's, as the pool's retained memory is). */
    public synchronized long keptBytes() {
        return reusable.bytes();
    }

    /** Blocks kept for reuse, and their bytes: {count, bytes}. */
    synchronized long[] reusable() {
        return new long[]{reusable.count(), reusable.bytes()};
    }

    /** Starts recording the arena plan of the allocations and releases the thread issues until {@link #endMeasure}. */
    synchronized void beginMeasure() {
        measuring = new CaptureArena(Long.MAX_VALUE);
        measured = new java.util.HashMap<>();
    }

    /** Ends measuring; returns the arena bytes the measured run needs (at least {@link #ALIGN}). */
    synchronized long endMeasure() {
        long bytes = measuring == null ? 0 : measuring.highWater();
        measuring = null;
        measured = null;
        return Math.max(ALIGN, bytes);
    }

    /**
     * Allocates an arena of {@code bytes} (before the capture: no allocation happens inside one) and
     * makes every allocation until {@link #endCapture} come from it. Its bytes count as activations.
     */
    synchronized CaptureMemory beginCapture(long bytes) {
        if (capture != null) {
            throw new IllegalStateException("a step is already being captured on " + device);
        }
        device.bind();
        Pointer p = new Pointer();
        int err = cudaMalloc(p, bytes);
        if (err == CUDA_ERROR_MEMORY_ALLOCATION) {
            cudaGetLastError();
            collectUnreachable();
            p = new Pointer();
            err = cudaMalloc(p, bytes);
        }
        CudaCheck.check(err, "cudaMalloc", "captured step arena", bytes + " bytes", liveTotal + " bytes live on " + device);
        CaptureMemory m = new CaptureMemory(p.address(), bytes);
        arenas.add(m);
        long[] c = live.get(MemoryCategory.ACTIVATIONS);
        c[0] += bytes;
        c[1] = Math.max(c[1], c[0]);
        liveTotal += bytes;
        peakTotal = Math.max(peakTotal, liveTotal);
        if (sites != null) {
            sites.allocated(m.base, MemoryCategory.ACTIVATIONS, bytes, "captured step arena");
        }
        capture = m;
        return m;
    }

    /** Allocations come from the device again. */
    synchronized void endCapture() {
        capture = null;
    }

    /** Frees a captured step's arena (its graph destroyed first); its tensors must not be used afterwards. */
    synchronized void freeArena(CaptureMemory m) {
        if (!arenas.remove(m) || closed) {
            return;
        }
        device.bind();
        blocks.values().removeIf(b -> b.arena() == m);
        CudaCheck.check(cudaFree(new DevicePointer(m.base)), "cudaFree", "captured step arena", m.bytes + " bytes");
        live.get(MemoryCategory.ACTIVATIONS)[0] -= m.bytes;
        liveTotal -= m.bytes;
        if (sites != null) {
            sites.released(m.base);
        }
        if (arenas.isEmpty()) {
            retired.forEach(this::release);
            retired.clear();
        }
    }

    /** True while a step is measured or captured by {@link CudaBackend#captureStep}: its buffers must be its own. */
    synchronized boolean stepScoped() {
        return measuring != null || capture != null;
    }

    /**
     * Keeps {@code hostMemory} as long as the step being captured lives, where one is: a copy captured from it reads it
     * at every replay. Nothing outside a capture.
     */
    synchronized void holdForCapture(Object hostMemory) {
        if (capture != null) {
            capture.held.add(hostMemory);
        }
    }

    /** The step run under way: its measuring plan or its capture (null: none); a new object for every run. */
    synchronized Object stepRun() {
        return measuring != null ? measuring : capture;
    }

    /** True while a step is being captured on this allocator's stream (the stream's own state included). */
    synchronized boolean inCapture() {
        return capture != null || capturing();
    }

    /** Frees the blocks reported unreachable that are still live (not freed explicitly meanwhile). */
    private void releaseUnreachable() {
        if (!deferred.isEmpty() && !capturing()) {
            deferred.forEach(this::release);
            deferred.clear();
        }
        for (Block b = unreachable.poll(); b != null; b = unreachable.poll()) {
            if (blocks.get(b.address()) == b) { // the same allocation, not a later one at the same address
                blocks.remove(b.address());
                release(b);
            }
        }
    }

    /** After a failed allocation: lets the collector find unreachable activations, then frees them. */
    private void collectUnreachable() {
        System.gc();
        try {
            Thread.sleep(50); // the cleaner thread reports them asynchronously
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        releaseUnreachable();
    }

    /** Frees now the activations the collector has already found unreachable (on the owning thread). */
    public synchronized void releaseUnreachableNow() {
        if (!closed) {
            device.bind();
            releaseUnreachable();
        }
    }

    /** Device memory: never read or written by the host directly. */
    @Override
    public boolean hostMemory() {
        return false;
    }

    /** A device copy of host tensor {@code host} (or {@code host} itself when it already lives here). */
    @Override
    public Tensor upload(MemoryCategory category, Tensor host) {
        if (owns(host)) {
            return host;
        }
        if (inCapture()) {
            throw new org.orbitrl.kernels.NotCapturableException("upload of " + host);
        }
        Tensor dev = allocate(category, host.dtype(), host.shape(), false);   // the copy writes it whole
        copy(host, dev);
        return dev;
    }

    /** A device copy of {@code values} as f32 [shape], staged through page-locked host memory ({@link PinnedStaging}). */
    @Override
    public Tensor uploadFloats(MemoryCategory category, float[] values, long... shape) {
        if (inCapture()) {
            throw new org.orbitrl.kernels.NotCapturableException("upload of " + values.length + " floats");
        }
        Tensor dev = allocate(category, DType.F32, shape, false);   // the staged copy writes it whole
        if (dev.numel() != values.length) {
            free(dev);
            throw new IllegalArgumentException(values.length + " values do not fill shape " + Arrays.toString(shape));
        }
        device.bind();
        synchronized (pinned) {
            pinned.upload(values, 0, values.length, address(dev));
        }
        return dev;
    }

    /** A contiguous f32 device tensor's values through page-locked host memory, after the stream's work; others as {@link #toHost}. */
    @Override
    public float[] toFloats(Tensor t) {
        if (!owns(t) || t.dtype() != DType.F32 || !t.isContiguous()) {
            return TensorAllocator.super.toFloats(t);
        }
        if (inCapture()) {
            throw new org.orbitrl.kernels.NotCapturableException("host read of " + t);
        }
        float[] out = new float[Math.toIntExact(t.numel())];
        device.bind();
        synchronized (pinned) {
            pinned.download(address(t), out, out.length);
        }
        return out;
    }

    /** A host copy of device tensor {@code t} (contiguous), after the stream's work; host tensors pass through. */
    @Override
    public Tensor toHost(Tensor t) {
        if (!owns(t)) {
            return t;
        }
        if (inCapture()) {
            throw new org.orbitrl.kernels.NotCapturableException("host read of " + t);
        }
        Tensor host = Tensor.allocate(Arena.ofAuto(), t.dtype(), t.shape());
        copy(t, host);
        return host;
    }

    /**
     * Copies between host and device memory in any direction (host to host too), same shape. The
     * device side must be contiguous; a host side of another dtype is converted on the host. A copy
     * to the host waits for the stream; the others are issued on it.
     */
    @Override
    public void copy(Tensor src, Tensor dst) {
        if (!Arrays.equals(src.shape(), dst.shape())) {
            throw new IllegalArgumentException("copy of " + src + " into " + dst + ": shapes differ");
        }
        boolean fromDevice = owns(src);
        boolean toDevice = owns(dst);
        // a source of device memory this allocator does not own (its segment's scope is closed): another allocator's
        CudaAllocator peer = fromDevice || !toDevice || src.segment().scope().isAlive() ? null : ownerOf(src);
        if (peer != null) {
            copyFromPeer(peer, src, dst);
            return;
        }
        if (!fromDevice && !toDevice) {
            dst.copyFrom(src);
            return;
        }
        if ((!fromDevice || !toDevice) && inCapture()) {
            throw new org.orbitrl.kernels.NotCapturableException((fromDevice ? "device->host" : "host->device") + " copy into " + dst);
        }
        if (fromDevice) {
            src.requireContiguous("device copy source");
        }
        if (toDevice) {
            dst.requireContiguous("device copy destination");
        }
        if (fromDevice && toDevice && src.dtype() != dst.dtype()) {
            throw new IllegalArgumentException("device copy of " + src + " into " + dst + ": dtypes differ");
        }
        device.bind();
        long bytes = dst.byteSize();
        if (bytes == 0) {
            return;
        }
        boolean pinnedSource = !fromDevice && pinnedHere(src);
        if (pinnedSource && src.dtype() == dst.dtype() && src.isContiguous()) {
            // page-locked: read in order with the stream's work (an async copy into it included), nothing to stage
            CudaCheck.check(cudaMemcpyAsync(new DevicePointer(address(dst)), new DevicePointer(address(src)), bytes,
                    cudaMemcpyHostToDevice, stream.handle()), "cudaMemcpyAsync pinned host->device", dst, bytes + " bytes");
        } else if (!fromDevice) {
            if (pinnedSource) {   // read on the host below: an async copy into it must have landed
                stream.synchronize();
            }
            Tensor h = src.dtype() == dst.dtype() ? src.contiguous() : src.to(dst.dtype());
            if (!h.segment().isNative()) {
                Tensor n = Tensor.allocate(Arena.ofAuto(), h.dtype(), h.shape());
                n.copyFrom(h);
                h = n;
            }
            if (bytes >= STAGED_BYTES && !capturing()) {   // large: through page-locked memory, copied out before the return
                synchronized (pinned) {
                    pinned.upload(MemorySegment.ofAddress(address(h)).reinterpret(bytes), address(dst));
                }
            } else {
                // a pageable source is staged by the driver before the call returns
                CudaCheck.check(cudaMemcpyAsync(new DevicePointer(address(dst)), new DevicePointer(address(h)), bytes,
                        cudaMemcpyHostToDevice, stream.handle()), "cudaMemcpyAsync host->device", dst, bytes + " bytes");
            }
            java.lang.ref.Reference.reachabilityFence(h);
        } else if (toDevice) {
            Launcher.settleDeferred(); // a copy that may read what a launch left to the next ones
            CudaCheck.check(cudaMemcpyAsync(new DevicePointer(address(dst)), new DevicePointer(address(src)), bytes,
                    cudaMemcpyDeviceToDevice, stream.handle()), "cudaMemcpyAsync device->device", dst, bytes + " bytes");
        } else {
            boolean direct = dst.isContiguous() && dst.segment().isNative() && dst.dtype() == src.dtype();
            Tensor h = direct ? dst : Tensor.allocate(Arena.ofAuto(), src.dtype(), src.shape());
            if (src.byteSize() >= STAGED_BYTES) {   // large: through page-locked memory, after the stream's work
                synchronized (pinned) {
                    pinned.download(address(src), MemorySegment.ofAddress(address(h)).reinterpret(src.byteSize()));
                }
            } else {
                Launcher.settleDeferred(); // a copy that may read what a launch left to the next ones
                CudaCheck.check(cudaMemcpyAsync(new DevicePointer(address(h)), new DevicePointer(address(src)), src.byteSize(),
                        cudaMemcpyDeviceToHost, stream.handle()), "cudaMemcpyAsync device->host", src, src.byteSize() + " bytes");
                stream.synchronize();
            }
            java.lang.ref.Reference.reachabilityFence(h);
            if (!direct) {
                dst.copyFrom(h);
            }
        }
    }

    /** Page-locked host memory ({@code cudaMallocHost}), freed by {@link #freePinnedHost} or at {@link #close}. */
    @Override
    public synchronized Tensor allocatePinnedHost(DType dtype, long... shape) {
        if (closed) {
            throw new IllegalStateException("allocator closed");
        }
        device.bind();
        return pinnedHost.allocate(dtype, shape);
    }

    /**
     * Frees a tensor of {@link #allocatePinnedHost} after the stream's work (which may still read or write it); nothing
     * once the allocator is closed (which freed it).
     */
    @Override
    public void freePinnedHost(Tensor t) {
        Long bytes;
        synchronized (this) {
            if (closed) {
                return;
            }
            bytes = pinnedHost.remove(t);
        }
        if (bytes == null) {
            throw new IllegalArgumentException(t + " is not a pinned host tensor of this allocator");
        }
        device.bind();
        stream.synchronize();
        PinnedHostTensors.free(t, bytes);
    }

    /**
     * A device-to-host copy into a tensor of {@link #allocatePinnedHost} issued on the stream and not waited for; any
     * other destination (or a source not of this allocator) as {@link #copy}.
     */
    @Override
    public void copyToHostAsync(Tensor src, Tensor dst) {
        if (!owns(src) || !src.isContiguous() || !dst.isContiguous() || src.dtype() != dst.dtype()
                || !Arrays.equals(src.shape(), dst.shape()) || !pinnedHere(dst)) {
            copy(src, dst);
            return;
        }
        if (inCapture()) {
            throw new org.orbitrl.kernels.NotCapturableException("device->host copy into " + dst);
        }
        device.bind();
        Launcher.settleDeferred(); // a copy that may read what a launch left to the next ones
        CudaCheck.check(cudaMemcpyAsync(new DevicePointer(address(dst)), new DevicePointer(address(src)), src.byteSize(),
                cudaMemcpyDeviceToHost, stream.handle()), "cudaMemcpyAsync device->pinned host", src, src.byteSize() + " bytes");
    }

    /** Waits for the stream: its copies into pinned host memory are done. */
    @Override
    public void awaitCopies() {
        device.bind();
        stream.synchronize();
    }

    /** Whether {@code t} lies inside a tensor of {@link #allocatePinnedHost} of this allocator. */
    private boolean pinnedHere(Tensor t) {
        return pinnedHost.contains(t);
    }

    /** Zeroes {@code t}: on the stream for a (contiguous) device tensor, directly for a host one. */
    @Override
    public void zero(Tensor t) {
        if (!owns(t)) {
            t.fill(0);
            return;
        }
        t.requireContiguous("zero");
        device.bind();
        if (t.byteSize() > 0) {
            CudaCheck.check(cudaMemsetAsync(new DevicePointer(address(t)), 0, t.byteSize(), stream.handle()),
                    "cudaMemsetAsync", t, t.byteSize() + " bytes");
        }
    }

    /**
     * Frees now the allocation of activations or logits that {@code t} covers whole (any view of
     * all its elements from the first, e.g. a reshape); a partial view, a tensor of another
     * allocator or category, one already released or freed, and any while the stream is being
     * captured into a graph (or one allocated during a capture) are left alone. The free is
     * stream-ordered ({@code cudaFreeAsync}): work already issued on this allocator's stream still
     * reads valid memory.
     */
    @Override
    public synchronized void release(Tensor t) {
        if (closed || t.byteOffset() != 0) {
            return;
        }
        Block b = blocks.get(t.segment().address());
        if (b == null || b.owner().get() != t.segment() || !RELEASED_WHEN_UNREACHABLE.contains(b.category())
                || t.byteSize() != b.size()) {
            return;
        }
        if (b.arena() != null) {
            if (b.arena() == capture) {   // reused by a later allocation of the step, after this use on the stream
                blocks.remove(b.address());
                capture.plan.give(b.offset(), b.bytes());
            }
            return;                       // outside its capture the arena's memory stays with its graph
        }
        if (!b.async() || capturing()) {
            return;   // captured work replays on it: kept until unreachable, like every allocation made in a capture
        }
        if (measuring != null) {
            Long off = measured.remove(b.address());
            if (off != null) {
                measuring.give(off, b.bytes());
            }
        }
        blocks.remove(b.address());
        release(b);
    }

    /** Frees the allocation {@code t} was allocated as (t must be the whole allocation, not a view). */
    @Override
    public synchronized void free(Tensor t) {
        free(t, true);
    }

    /**
     * As {@link #free}, for a buffer no captured step can refer to (a kernel scratch buffer, which
     * captured steps never share): freed now even while captured steps live.
     */
    synchronized void freeUncaptured(Tensor t) {
        free(t, false);
    }

    private void free(Tensor t, boolean retire) {
        if (closed) {
            return;   // everything went with the close (a holder freeing after it, as release does, is no error)
        }
        long address = t.segment().address();
        Block b = blocks.get(address);
        if (b == null || t.byteOffset() != 0) {
            throw new IllegalArgumentException("free: " + t + " at 0x" + Long.toHexString(address(t))
                    + " is not an allocation of " + device);
        }
        if (b.owner().get() != t.segment()) {   // released or freed before, its address since given to another allocation
            throw new IllegalArgumentException("free: " + t + " at 0x" + Long.toHexString(address(t))
                    + " was released or freed already; the address now holds another allocation of " + device);
        }
        if (b.arena() != null) {
            throw new IllegalArgumentException("free: " + t + " is arena memory of a captured step (freed with the step)");
        }
        blocks.remove(address);
        if (retire && !arenas.isEmpty()) {
            retired.add(b);   // a captured step may read it (a kernel's reused buffer): freed once no step lives
            return;
        }
        release(b);
    }

    private void release(Block b) {
        device.bind();
        if (b.async && !closed && capturing()) {
            deferred.add(b);    // a free inside a capture would become part of the graph
            return;
        }
        // a per-step block is kept for the next allocation of its size where the caps allow (accounted as freed below)
        boolean kept = b.async && !closed && RELEASED_WHEN_UNREACHABLE.contains(b.category) && reusable.keep(b.address, b.bytes);
        if (!kept && b.async) {
            int err = cudaFreeAsync(new DevicePointer(b.address), stream.handle());
            if (err != 0) {
                CudaCheck.check(err, "cudaFreeAsync", b.bytes + " bytes", b.category);
            }
        } else if (!kept) {
            CudaCheck.check(cudaFree(new DevicePointer(b.address)), "cudaFree", b.bytes + " bytes", b.category);
        }
        live.get(b.category)[0] -= b.bytes;
        liveTotal -= b.bytes;
        if (sites != null) {
            sites.released(b.address);
        }
        if (b.generation == generation && RELEASED_WHEN_UNREACHABLE.contains(b.category)) {
            sinceCollection -= b.bytes;
        }
    }

    /**
     * dst (this allocator's) = src, device memory of another live allocator (another GPU's, or another stream's on this
     * GPU): issued on this allocator's stream after the source's stream has finished its work (the source's writer
     * waits), {@code cudaMemcpyPeerAsync} between GPUs. An adapter version published to another GPU's rollout engine.
     */
    private void copyFromPeer(CudaAllocator peer, Tensor src, Tensor dst) {
        if (inCapture()) {
            throw new org.orbitrl.kernels.NotCapturableException("copy from " + peer.device + " into " + dst);
        }
        src.requireContiguous("peer copy source");
        dst.requireContiguous("device copy destination");
        if (src.dtype() != dst.dtype()) {
            throw new IllegalArgumentException("peer copy of " + src + " into " + dst + ": dtypes differ");
        }
        long bytes = dst.byteSize();
        if (bytes == 0) {
            return;
        }
        peer.device.bind();
        peer.stream.synchronize();
        device.bind();
        int from = peer.device.index();
        int to = device.index();
        if (from == to) {
            Launcher.settleDeferred(); // a copy that may read what a launch left to the next ones
            CudaCheck.check(cudaMemcpyAsync(new DevicePointer(address(dst)), new DevicePointer(address(src)), bytes,
                    cudaMemcpyDeviceToDevice, stream.handle()), "cudaMemcpyAsync device->device (another stream's)", dst,
                    bytes + " bytes");
        } else {
            Launcher.settleDeferred(); // a copy that may read what a launch left to the next ones
            CudaCheck.check(cudaMemcpyPeerAsync(new DevicePointer(address(dst)), to, new DevicePointer(address(src)), from,
                    bytes, stream.handle()), "cudaMemcpyPeerAsync", "GPU " + from + " -> GPU " + to, dst, bytes + " bytes");
        }
    }

    /** The live allocator (other than this one and what it shares) whose device memory holds {@code t}, or null. */
    private CudaAllocator ownerOf(Tensor t) {
        for (CudaAllocator a : LIVE) {
            if (a != this && a != shared && a.ownsHere(t)) {
                return a;
            }
        }
        return null;
    }

    /**
     * True when {@code t}'s bytes lie inside one live allocation of this allocator, or of the
     * allocator {@link #share}d with it.
     */
    public boolean owns(Tensor t) {
        CudaAllocator other = shared;
        return ownsHere(t) || other != null && other.ownsHere(t);
    }

    private synchronized boolean ownsHere(Tensor t) {
        long a = address(t);
        Map.Entry<Long, Block> e = blocks.floorEntry(a);
        return e != null && a + t.byteSize() <= e.getKey() + e.getValue().bytes;
    }

    public synchronized long liveBytes(MemoryCategory category) {
        return live.get(category)[0];
    }

    public synchronized long peakBytes(MemoryCategory category) {
        return live.get(category)[1];
    }

    public synchronized long liveBytes() {
        return liveTotal;
    }

    public synchronized long peakBytes() {
        return peakTotal;
    }

    /**
     * Under {@code -Dorbit.cuda.peakSites=true} ({@link PeakSites#PROPERTY}): the live allocations of
     * {@code category} at its highest peak so far, grouped by allocating call site, most bytes first;
     * empty when the property is off.
     */
    public synchronized java.util.List<PeakSites.Site> peakSites(MemoryCategory category) {
        return sites == null ? java.util.List.of() : sites.atPeak(category);
    }

    /** Number of live allocations. */
    public synchronized int liveAllocations() {
        return blocks.size();
    }

    /** Frees everything still allocated. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        LIVE.remove(this);
        device.bind();
        deferred.forEach(this::release);
        deferred.clear();
        for (Block b : blocks.values()) {
            if (b.arena() == null) {
                release(b);
            }
        }
        blocks.clear();
        for (CaptureMemory m : arenas) {
            CudaCheck.check(cudaFree(new DevicePointer(m.base)), "cudaFree", "captured step arena", m.bytes + " bytes");
            live.get(MemoryCategory.ACTIVATIONS)[0] -= m.bytes;
            liveTotal -= m.bytes;
        }
        arenas.clear();
        retired.forEach(this::release);
        retired.clear();
        unreachable.clear();
        freeReusable();
        stream.synchronize();
        pinned.close();
        pinnedHost.freeAll();
        CudaCheck.check(cudaMemPoolTrimTo(pool, 0), "cudaMemPoolTrimTo");
        if (ownsStream) {
            stream.close();
        }
    }
}
