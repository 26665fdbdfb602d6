package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.DecodeLayer;
import org.orbitrl.kernels.ExpertWeights;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.OptimizerOps;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.DevicePointer;
import org.orbitrl.kernels.cuda.internal.KernelCompiler;
import org.orbitrl.kernels.cuda.internal.KernelLibrary;
import org.orbitrl.kernels.cuda.internal.Launcher;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;

import static org.bytedeco.cuda.global.cudart.*;

/**
 * The {@link Backend} on one NVIDIA GPU. Tensors are device tensors from {@link #allocator()}
 * (see {@link CudaAllocator} for what a device tensor is); {@link #toDevice} and {@link #toHost}
 * copy between host and device. All work is issued, in order, on one stream ({@link #stream()}),
 * asynchronously: results are on the host only after {@link #toHost} or {@link #synchronize}.
 *
 * <p>Kernels are CUDA C sources compiled at run time by NVRTC for the device's architecture and
 * cached on disk ({@code -Dorbit.cuda.cache}, default {@code ~/.cache/orbit/cuda}); dense products
 * go through cuBLAS ({@link CudaMatmulOps} states the precision of each path).
 *
 * <p>Errors a kernel detects (an embedding id or rope position out of range) cannot throw where
 * they happen; they are raised as {@link IndexOutOfBoundsException} by the next
 * {@link #synchronize} or {@link #toHost}. One thread drives a backend at a time.
 */
public final class CudaBackend implements Backend {
    private final CudaContext ctx;
    private final CudaRowOps rowOps;
    private final CudaMatmulOps matmulOps;
    private final CudaLowRankOps lowRankOps;
    private final CudaAttentionOps attentionOps;
    private final CudaSelectOps selectOps;
    private final CudaMoe moe;
    private final CudaFusedDecode fusedDecode;
    private final CudaDecodeLayer decodeLayer;
    private final CudaTrainOps trainOps;
    private final CudaAttentionBackward attentionBackward;
    private final CudaExactOps exactOps;
    private final CudaExactExperts exactExperts;
    private final CudaMoePairs moePairs;
    /**
     * Whether a few tokens' routed experts run per pair ({@link #moePairs(ExpertWeights)}): {@code -Dorbit.cuda.moePairs=off} keeps
     * them grouped by expert (a host read of the counts a layer, so decode steps of MoE models are not captured).
     */
    private boolean moePairsOn = !"off".equals(System.getProperty("orbit.cuda.moePairs"));
    private static final boolean FUSED_AXPY = !"off".equals(System.getProperty("orbit.cuda.fusedAxpy"));
    private final CudaPolicyOps policyOps;
    private final CudaLayoutOps layoutOps;
    private final CudaSampling sampling;
    private final CudaOftOps oftOps;
    private final boolean exact;
    private final Path kernelCache;
    private boolean closed;

    /**
     * Device 0, kernel cache from {@code -Dorbit.cuda.cache} or {@code ~/.cache/orbit/cuda}, exact
     * mode when {@code -Dorbit.cuda.exact=true}.
     */
    public CudaBackend() {
        this(0, defaultCacheDir(), Boolean.getBoolean("orbit.cuda.exact"));
    }

    public CudaBackend(int deviceIndex, Path kernelCache) {
        this(deviceIndex, kernelCache, false);
    }

    /**
     * @param exact batch-invariant products and attention: every row's result is computed the same
     *              way whatever the batch (see {@link #exact()}); slower than the default kernels
     */
    public CudaBackend(int deviceIndex, Path kernelCache, boolean exact) {
        this(deviceIndex, kernelCache, exact, null);
    }

    /**
     * A second backend on {@code base}'s device (rollout beside training): its own stream, of the device's
     * highest priority, cuBLAS, scratch and allocator; its kernels read base's tensors (frozen weights) in
     * place; each frees only what it allocated.
     */
    public CudaBackend(CudaBackend base) {
        this(base, true);
    }

    /**
     * As {@link #CudaBackend(CudaBackend)}; {@code highPriority} false gives the new stream the default
     * priority (then {@code base}'s work is scheduled no later than this backend's).
     */
    public CudaBackend(CudaBackend base, boolean highPriority) {
        this(base.ctx.device.index(), base.kernelCache, base.exact, base, highPriority);
    }

    private CudaBackend(int deviceIndex, Path kernelCache, boolean exact, CudaBackend base) {
        this(deviceIndex, kernelCache, exact, base, base != null);
    }

    private CudaBackend(int deviceIndex, Path kernelCache, boolean exact, CudaBackend base, boolean highPriority) {
        if (base != null) {
            base.synchronize(); // what base wrote is visible to this backend's stream
        }
        this.kernelCache = kernelCache;
        CudaDevice device = new CudaDevice(deviceIndex);
        KernelCompiler compiler = new KernelCompiler(kernelCache, device.computeCapabilityMajor(), device.computeCapabilityMinor());
        boolean dependentLaunches = KernelLibrary.dependentLaunchesFor(
                System.getProperty(KernelLibrary.DEPENDENT_LAUNCH_PROPERTY), compiler.archNumber());
        oneRowDependentLaunches();   // a mistyped value fails here, not as a capture that turns the graphs off
        this.ctx = new CudaContext(device, new KernelLibrary(compiler, dependentLaunches), highPriority);
        this.rowOps = new CudaRowOps(ctx);
        this.matmulOps = new CudaMatmulOps(ctx, rowOps);
        this.lowRankOps = new CudaLowRankOps(ctx, matmulOps);
        this.attentionOps = new CudaAttentionOps(ctx, this);
        this.selectOps = new CudaSelectOps(ctx);
        this.exactExperts = new CudaExactExperts(ctx);
        this.moe = new CudaMoe(ctx, rowOps, matmulOps, this);
        this.fusedDecode = new CudaFusedDecode(ctx, matmulOps, rowOps, moe.ops());
        this.decodeLayer = new CudaDecodeLayer(ctx, attentionOps::deviceTable);
        this.moePairs = new CudaMoePairs(ctx, moe.ops());
        this.trainOps = new CudaTrainOps(ctx, rowOps, matmulOps);
        this.attentionBackward = new CudaAttentionBackward(ctx, attentionOps);
        this.exactOps = new CudaExactOps(ctx, matmulOps, exactExperts);
        this.policyOps = new CudaPolicyOps(ctx);
        this.layoutOps = new CudaLayoutOps(ctx);
        this.sampling = new CudaSampling(ctx);
        this.oftOps = new CudaOftOps(ctx, exact);
        this.exact = exact;
        this.attentionOps.exact = exact;
        if (base != null) {
            ctx.allocator.share(base.ctx.allocator);
        }
    }

    /**
     * Exact mode: matmul, matmulQuantized and attention compute each row with one fixed kernel and
     * reduction order that do not depend on how many rows share the call, so a token's logits from
     * a one-token decode step equal bit for bit those of a whole-sequence training forward (the
     * normalisation, softmax and elementwise kernels are row-local in both modes). The activation
     * gradients through frozen weights are then taken in f32 on the exact weight values too
     * (nothing rounded to bf16).
     */
    public boolean exact() {
        return exact;
    }

    /** Exact mode's expert products (one instance: their tables are shared by the MoE and the dense quantized products). */
    CudaExactExperts exactExperts() {
        return exactExperts;
    }

    /** The kernel cache directory: {@code -Dorbit.cuda.cache}, else {@code ~/.cache/orbit/cuda}. */
    public static Path defaultCacheDir() {
        String p = System.getProperty("orbit.cuda.cache");
        return p != null ? Path.of(p) : Path.of(System.getProperty("user.home"), ".cache", "orbit", "cuda");
    }

    @Override
    public String name() {
        return "cuda:" + ctx.device.index();
    }

    public CudaDevice device() {
        return ctx.device;
    }

    @Override
    public CudaAllocator allocator() {
        return ctx.allocator;
    }

    /** The stream every operation of this backend is issued on. */
    public CudaStream stream() {
        return ctx.stream;
    }

    /** The architecture kernels are compiled for, the compile/cache counts so far and whether launches are dependent. */
    public String kernelInfo() {
        return ctx.kernels.arch() + ": " + ctx.kernels.stats() + ", dependent launches " + (dependentLaunches() ? "on" : "off");
    }

    /**
     * Whether the kernels of a decode step that wait for their predecessor are launched as
     * programmatic dependents of the kernel before them (Hopper's programmatic dependent launch):
     * {@code -Dorbit.cuda.pdl=on|off}, off by default ({@code on} needs kernels built for sm_90 or newer); a captured
     * step of one sequence is recorded with them on all the same ({@link #ONE_ROW_PDL_PROPERTY}). The numbers are the
     * same either way.
     */
    public boolean dependentLaunches() {
        return ctx.kernels.dependentLaunches();
    }

    /** Whether {@link #dependentLaunches(boolean) dependent launches} can be turned on (kernels built for sm_90 or newer). */
    public boolean dependentLaunchesSupported() {
        return ctx.kernels.dependentLaunchesSupported();
    }

    /**
     * Turns dependent launches on or off for launches issued from now on (a graph captured before
     * keeps its edges). On needs kernels built for sm_90 or newer.
     */
    public void dependentLaunches(boolean on) {
        ctx.kernels.dependentLaunches(on);
    }

    // ------------------------------------------------------------------ host <-> device

    /** A device copy of {@code host} (category {@link MemoryCategory#OTHER}). */
    public Tensor toDevice(Tensor host) {
        return toDevice(host, MemoryCategory.OTHER);
    }

    /** A device copy of {@code host}, contiguous, accounted under {@code category}. */
    public Tensor toDevice(Tensor host, MemoryCategory category) {
        Tensor dev = ctx.allocator.allocateUninitialized(category, host.dtype(), host.shape());   // the copy writes it whole
        copyToDevice(host, dev);
        return dev;
    }

    /** A device copy of a quantized weight (codes, scales, zero points), accounted as base weights. */
    public QuantizedTensor toDevice(QuantizedTensor host) {
        return new QuantizedTensor(host.format(), host.rows(), host.cols(),
                toDevice(host.codes(), MemoryCategory.BASE_WEIGHTS), toDevice(host.scales(), MemoryCategory.BASE_WEIGHTS),
                host.zeros() == null ? null : toDevice(host.zeros(), MemoryCategory.BASE_WEIGHTS), host.globalScale());
    }

    /** Copies host tensor {@code host} into device tensor {@code dev} (same dtype and shape; dev contiguous). */
    public void copyToDevice(Tensor host, Tensor dev) {
        requireNotCapturing("host->device copy into " + dev);
        CudaCopies.checkCopy(host, dev);
        ctx.devContiguous("copyToDevice destination", dev, host.dtype());
        Tensor src = CudaCopies.hostContiguous(host);
        ctx.device.bind();
        CudaCheck.check(cudaMemcpyAsync(new DevicePointer(CudaAllocator.address(dev)), new DevicePointer(CudaAllocator.address(src)),
                dev.byteSize(), cudaMemcpyHostToDevice, ctx.stream.handle()), "cudaMemcpyAsync host->device", dev, dev.byteSize() + " bytes");
        // A pageable source is staged by the driver before the call returns, so src may be freed after it.
        java.lang.ref.Reference.reachabilityFence(src);
    }

    /** A host copy of device tensor {@code dev}; waits for the stream and reports kernel errors. */
    public Tensor toHost(Tensor dev) {
        Tensor host = Tensor.allocate(Arena.ofAuto(), dev.dtype(), dev.shape());
        copyToHost(dev, host);
        return host;
    }

    /** Copies device tensor {@code dev} (contiguous) into host tensor {@code host}; waits for the stream. */
    public void copyToHost(Tensor dev, Tensor host) {
        requireNotCapturing("host read of " + dev);
        CudaCopies.checkCopy(host, dev);
        ctx.devContiguous("copyToHost source", dev, host.dtype());
        boolean direct = host.isContiguous() && host.segment().isNative();
        Tensor dst = direct ? host : Tensor.allocate(Arena.ofAuto(), dev.dtype(), dev.shape());
        ctx.device.bind();
        Launcher.settleDeferred(); // a copy that may read what a launch left to the next ones
        CudaCheck.check(cudaMemcpyAsync(new DevicePointer(CudaAllocator.address(dst)), new DevicePointer(CudaAllocator.address(dev)),
                dev.byteSize(), cudaMemcpyDeviceToHost, ctx.stream.handle()), "cudaMemcpyAsync device->host", dev, dev.byteSize() + " bytes");
        synchronize();
        if (!direct) {
            host.copyFrom(dst);
        }
    }

    /**
     * Device-to-device copy of {@code src} into {@code dst} (same dtype and shape): one memcpy when
     * both are contiguous, else a strided-copy kernel (4-byte elements, up to 4 dimensions).
     */
    @Override
    public void copy(Tensor src, Tensor dst) {
        CudaCopies.checkCopy(src, dst);
        if (!src.isContiguous() || !dst.isContiguous()) {
            ctx.device.bind();
            layoutOps.copy(src, dst);
            return;
        }
        ctx.devContiguous("copy source", src, dst.dtype());
        ctx.devContiguous("copy destination", dst, src.dtype());
        ctx.device.bind();
        Launcher.settleDeferred(); // a copy that may read what a launch left to the next ones
        CudaCheck.check(cudaMemcpyAsync(new DevicePointer(CudaAllocator.address(dst)), new DevicePointer(CudaAllocator.address(src)),
                dst.byteSize(), cudaMemcpyDeviceToDevice, ctx.stream.handle()), "cudaMemcpyAsync device->device", dst, dst.byteSize() + " bytes");
    }

    @Override
    public void copySpans(Tensor[] srcs, Tensor[] dsts) {
        ctx.device.bind();
        layoutOps.copySpans(srcs, dsts);
    }

    /** Frees a device tensor that came from {@link #allocator()} or {@link #toDevice}. */
    public void free(Tensor dev) {
        ctx.allocator.free(dev);
    }

    /** Frees the parts of a quantized weight that came from {@link #toDevice(QuantizedTensor)}. */
    public void free(QuantizedTensor dev) {
        ctx.allocator.free(dev.codes());
        ctx.allocator.free(dev.scales());
        if (dev.zeros() != null) {
            ctx.allocator.free(dev.zeros());
        }
    }

    /** Waits for all issued work; throws {@link CudaException} or a kernel-reported error. */
    public void synchronize() {
        requireNotCapturing("synchronize");
        ctx.device.bind();
        ctx.stream.synchronize();
        CudaKernelErrors.raise(ctx);
    }

    /**
     * Forgets what a traced build's kernels recorded so far (after the stream's work): the next {@link #kernelTimeline}
     * holds the launches from here. Needs {@code -Dorbit.cuda.trace=on} when the backend is made.
     */
    public void traceReset() {
        synchronize();
        ctx.kernels.traceReset();
    }

    /** What a traced build's kernels recorded since {@link #traceReset}, after the stream's work. */
    public KernelTimeline kernelTimeline() {
        synchronize();
        long[] dropped = new long[1];
        long[] words = ctx.kernels.traceRecords(dropped);
        return KernelTimeline.of(words, dropped[0]);
    }

    /** Whether the kernels are built to record the timeline ({@code -Dorbit.cuda.trace=on}). */
    public boolean traced() {
        return ctx.kernels.traced();
    }

    /** The machine code of kernel {@code name} as loaded, in bytes ({@link KernelLibrary#codeBytes}); -1 where unknown. */
    public int kernelCodeBytes(String name) {
        return ctx.kernels.codeBytes(name);
    }

    private void requireNotCapturing(String operation) {
        if (ctx.allocator.inCapture()) {
            throw new org.orbitrl.kernels.NotCapturableException(operation);
        }
    }

    /**
     * Captures {@code step} as a CUDA graph. First a measuring run: the step runs eagerly once (its
     * effects happen; with fixed inputs they are the replay's) while the allocator plans the arena
     * its allocations need; then that arena is allocated and the step is recorded with every
     * allocation taken from it ({@link CudaAllocator}). A replay is one graph launch writing the same
     * output tensor. Exact mode is captured as well: its kernels read the sequences' lengths and tables on the device,
     * and compute each row alone, so a replay at a padded batch equals the eager step bit for bit.
     *
     * @throws org.orbitrl.kernels.NotCapturableException when the step uploads, reads to the host, synchronises or
     *         outgrows its arena while recorded (exact mode's MoE layers, which group their rows on the host, for one)
     */
    @Override
    public org.orbitrl.kernels.CapturedStep captureStep(java.util.function.Supplier<Tensor> step) {
        ctx.device.bind();
        CudaAllocator a = ctx.allocator;
        a.beginMeasure();
        long bytes;
        try {
            step.get();
        } finally {
            bytes = a.endMeasure();
        }
        CudaAllocator.CaptureMemory arena = a.beginCapture(bytes);
        Tensor[] out = new Tensor[1];
        CudaGraph graph;
        try {
            graph = CudaGraph.capture(ctx.stream, () -> out[0] = step.get());
        } catch (RuntimeException | Error e) {
            a.endCapture();
            a.freeArena(arena);
            throw e;
        }
        a.endCapture();
        return new CudaCapturedStep(this, graph, arena, out[0]);
    }

    /**
     * {@code -Dorbit.cuda.pdlOneRow=on|off} (read at each capture; on by default): a captured step of one sequence is
     * recorded with dependent launches on ({@link #dependentLaunches(boolean)}) where they are off and the kernels take
     * them. On an H100 a one-sequence Qwen3-30B-A3B step took 3.040-3.045 ms with them against 3.111-3.127 without; an
     * eight-sequence step took 5-7% longer with them, so the others keep the backend's setting.
     */
    public static final String ONE_ROW_PDL_PROPERTY = "orbit.cuda.pdlOneRow";

    /** {@link #ONE_ROW_PDL_PROPERTY} as set; a value other than on or off is an error (checked when a backend is made, too). */
    static boolean oneRowDependentLaunches() {
        return Switches.onOff(ONE_ROW_PDL_PROPERTY, true);
    }

    /** {@link #captureStep(java.util.function.Supplier)}, with dependent launches at one sequence ({@link #ONE_ROW_PDL_PROPERTY}). */
    @Override
    public org.orbitrl.kernels.CapturedStep captureStep(java.util.function.Supplier<Tensor> step, int rows) {
        if (rows != 1 || !oneRowDependentLaunches() || dependentLaunches() || !dependentLaunchesSupported()) {
            return captureStep(step);
        }
        dependentLaunches(true);
        try {
            return captureStep(step);
        } finally {
            dependentLaunches(false);
        }
    }

    // ------------------------------------------------------------------ Backend

    @Override
    public void matmul(Tensor x, Tensor w, Tensor y) {
        ctx.device.bind();
        if (exact) {
            exactOps.matmul(x, w, y);
        } else {
            matmulOps.matmul(x, w, y);
        }
    }

    /** As {@link #matmul} for each weight; outside exact mode x is read (and rounded to bf16) once for all of them. */
    @Override
    public void matmulShared(Tensor x, Tensor[] ws, Tensor[] ys) {
        ctx.device.bind();
        if (exact) {
            Backend.super.matmulShared(x, ws, ys);
        } else {
            matmulOps.matmulShared(x, ws, ys);
        }
    }

    /**
     * Decode batches of 1 to 64 rows outside exact mode, bf16 weights with f32 LoRA factors ({@link CudaLowRankOps}): the
     * LoRAs' A products in one launch, then the base products with the B terms in another: the GEMV at 1 to 16 rows
     * ({@code bgemv_lr_m*}; {@code -Dorbit.cuda.lowRankGemv=off} declines), tensor cores at 17 to 64 ({@code dmma.cu},
     * x rounded to bf16 by the first launch), or below that form's bound a cuBLAS product each and the B terms as {@link
     * #matmulAxpy} adds them (with the fused axpy on); {@code -Dorbit.cuda.dmma=off} declines those.
     */
    @Override
    public boolean matmulLowRank(Tensor x, Tensor[] ws, LowRankTerm[] terms, Tensor[] ys) {
        if (exact) {
            return false;
        }
        ctx.device.bind();
        return lowRankOps.matmulLowRank(x, ws, terms, ys, FUSED_AXPY);
    }

    /**
     * A decode step of one row outside exact mode, one to three bf16 weights: the norm staged by every block of one
     * GEMV launch over all of them ({@link CudaMatmulOps#rmsNormMatmulShared}; {@code -Dorbit.cuda.normShared=off}
     * declines).
     */
    @Override
    public boolean rmsNormMatmulShared(Tensor x, Tensor normWeight, float eps, Tensor[] ws, Tensor[] ys) {
        if (exact) {
            return false;
        }
        ctx.device.bind();
        return matmulOps.rmsNormMatmulShared(x, normWeight, eps, ws, ys);
    }

    /**
     * {@code y += x · wᵀ} for a bf16 weight (x, y f32): a residual add folded into the projection, one
     * launch up to 16 rows (the GEMV, exact weights, f32 accumulation), else cuBLAS with β = 1 on
     * bf16-rounded x.
     */
    public void matmulAccumulate(Tensor x, Tensor w, Tensor y) {
        ctx.device.bind();
        matmulOps.matmulAccumulate(x, w, y);
    }

    /** The expert kernels' formats: INT4 g32 (symmetric and zero-point), MXFP4 and NVFP4; not FP8 block-128. */
    @Override
    public boolean runsExpertsIn(org.orbitrl.kernels.quant.QuantFormat format) {
        return switch (format.name()) {
            case "int4-g32", "int4-g32-asym", "mxfp4", "nvfp4" -> true;
            default -> false;
        };
    }

    @Override
    public void matmulQuantized(Tensor x, QuantizedTensor w, Tensor y) {
        ctx.device.bind();
        if (exact) {
            exactOps.matmulQuantized(x, w, y);
        } else {
            matmulOps.matmulQuantized(x, w, y);
        }
    }

    @Override
    public void matmulTransposed(Tensor dy, Tensor w, Tensor dx) {
        ctx.device.bind();
        if (exact) {
            if (!exactOps.matmulTransposed(dy, w, null, dx)) {
                trainOps.matmulTransposedF32(dy, w, null, dx);
            }
        } else {
            trainOps.matmulTransposed(dy, w, dx);
        }
    }

    @Override
    public void matmulQuantizedTransposed(Tensor dy, QuantizedTensor w, Tensor dx) {
        ctx.device.bind();
        if (exact) {
            if (!exactOps.matmulTransposed(dy, null, w, dx)) {
                trainOps.matmulTransposedF32(dy, null, w, dx);
            }
        } else {
            trainOps.matmulQuantizedTransposed(dy, w, dx);
        }
    }

    /**
     * Outside exact mode: an f32 w as {@link #matmul} takes it (the narrow kernel or cuBLAS f32, never bf16 rows); an FP8
     * block weight at 1 to 4 rows by the FP8 GEMV and a bf16 one at up to 16 rows by the bf16 GEMV (f32 x, exact weights,
     * f32 sums); a bf16 weight or an FP8 one with E8M0 scales (exact in bf16) at up to 256 rows through bf16 tensor cores
     * with x split into two bf16 parts (each value to within 2^-18; {@code -Dorbit.cuda.splitX=off} declines); else
     * widened or dequantized into a reused f32 buffer first. In exact mode the exact products.
     */
    @Override
    public void matmulF32(Tensor x, Tensor w, QuantizedTensor q, Tensor y) {
        if (exact || (w == null) == (q == null)) {
            Backend.super.matmulF32(x, w, q, y);
            return;
        }
        ctx.device.bind();
        matmulOps.matmulF32(x, w, q, y);
    }

    /** Outside exact mode: one call for every group at decode sizes (see {@code CudaMatmulOps#matmulF32Grouped}). */
    @Override
    public boolean matmulF32Grouped(Tensor x, QuantizedTensor q, int groups, Tensor y) {
        if (exact) {
            return false;
        }
        ctx.device.bind();
        return matmulOps.matmulF32Grouped(x, q, groups, y);
    }

    /** As {@link #matmulF32}: cuBLAS f32 over the weight's f32 values outside exact mode. */
    @Override
    public void matmulTransposedF32(Tensor dy, Tensor w, QuantizedTensor q, Tensor dx) {
        if (exact || (w == null) == (q == null)) {
            Backend.super.matmulTransposedF32(dy, w, q, dx);
            return;
        }
        ctx.device.bind();
        trainOps.matmulTransposedF32(dy, w, q, dx);
    }

    @Override
    public void matmulTN(Tensor a, Tensor b, float alpha, Tensor c) {
        ctx.device.bind();
        trainOps.matmulTN(a, b, alpha, c);
    }

    @Override
    public void axpy(float alpha, Tensor x, Tensor y) {
        ctx.device.bind();
        trainOps.axpy(alpha, x, y);
    }

    /**
     * One cuBLAS product with α = alpha and β = 1 for an f32 w outside exact mode; otherwise, and with
     * {@code -Dorbit.cuda.fusedAxpy=off}, {@link Backend}'s two steps.
     */
    @Override
    public void matmulAxpy(Tensor x, Tensor w, float alpha, Tensor y) {
        if (fusesAxpy(w)) {
            matmulOps.matmulAxpyF32(x, w, alpha, y);
        } else {
            Backend.super.matmulAxpy(x, w, alpha, y);
        }
    }

    /** As {@link #matmulAxpy}: one cuBLAS product with α = alpha and β = 1 where it fuses them. */
    @Override
    public void matmulTransposedAxpy(Tensor dy, Tensor w, float alpha, Tensor dx) {
        if (fusesAxpy(w)) {
            trainOps.matmulTransposedAxpyF32(dy, w, alpha, dx);
        } else {
            Backend.super.matmulTransposedAxpy(dy, w, alpha, dx);
        }
    }

    /** Whether a product and its axpy go as one (an f32 w outside exact mode, the fused axpy on); binds the device then. */
    private boolean fusesAxpy(Tensor w) {
        if (exact || w.dtype() != DType.F32 || !FUSED_AXPY) {
            return false;
        }
        ctx.device.bind();
        return true;
    }

    @Override
    public void gatherRows(Tensor src, Tensor rows, Tensor dst) {
        ctx.device.bind();
        trainOps.gatherRows(src, rows, dst);
    }

    @Override
    public void scatterAddRows(Tensor src, Tensor rows, Tensor weights, Tensor dst) {
        ctx.device.bind();
        trainOps.scatterAddRows(src, rows, weights, dst);
    }

    @Override
    public void addBias(Tensor y, Tensor bias) {
        ctx.device.bind();
        trainOps.addBias(y, bias);
    }

    @Override
    public void rmsNormBackward(Tensor x, Tensor weight, float eps, Tensor dy, Tensor dx) {
        ctx.device.bind();
        trainOps.rmsNormBackward(x, weight, eps, dy, dx);
    }

    @Override
    public void swigluBackward(Tensor gate, Tensor up, Tensor dout, Tensor dgate, Tensor dup) {
        ctx.device.bind();
        trainOps.swigluBackward(gate, up, dout, dgate, dup);
    }

    @Override
    public void ropeBackward(Tensor dx, Tensor positions, RopeTable table) {
        ctx.device.bind();
        attentionBackward.ropeBackward(dx, positions, table);
    }

    @Override
    public void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor dout, int queryStart, AttentionSpec spec,
                                  Tensor dq, Tensor dk, Tensor dv) {
        ctx.device.bind();
        attentionBackward.attentionBackward(q, k, v, dout, queryStart, spec, dq, dk, dv);
    }

    @Override
    public void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dout, int queryStart,
                                  AttentionSpec spec, Tensor dq, Tensor dk, Tensor dv) {
        ctx.device.bind();
        attentionBackward.attentionBackward(q, k, v, out, lse, dout, queryStart, spec, dq, dk, dv);
    }

    /** Sets contiguous device tensor {@code t} to zero, on the stream. */
    public void zero(Tensor t) {
        ctx.device.bind();
        trainOps.zero(t);
    }

    @Override
    public void tokenLogProbs(Tensor logits, Tensor rows, Tensor tokens, float temperature, Tensor out) {
        ctx.device.bind();
        policyOps.tokenLogProbs(logits, rows, tokens, temperature, out);
    }

    @Override
    public void tokenLogProbsBackward(Tensor logits, Tensor rows, Tensor tokens, Tensor dLogp, float temperature,
                                      Tensor dLogits) {
        ctx.device.bind();
        policyOps.tokenLogProbsBackward(logits, rows, tokens, dLogp, temperature, dLogits);
    }

    @Override
    public void sampleTokens(Tensor logits, Tensor requests, Tensor tokens, Tensor sampledLogp) {
        ctx.device.bind();
        sampling.sampleTokens(logits, requests, tokens, sampledLogp);
    }

    @Override
    public void oftRotation(Tensor param, int neumannTerms, Tensor rotationT) {
        ctx.device.bind();
        oftOps.rotation(param, neumannTerms, rotationT);
    }

    @Override
    public void oftRotationBackward(Tensor param, Tensor dRotation, int neumannTerms, Tensor grad) {
        ctx.device.bind();
        oftOps.rotationBackward(param, dRotation, neumannTerms, grad);
    }

    @Override
    public void oftRotate(Tensor x, Tensor rotationT, boolean transposed, Tensor y) {
        ctx.device.bind();
        oftOps.rotate(x, rotationT, transposed, y);
    }

    @Override
    public void oftProject(Tensor param, double radius) {
        ctx.device.bind();
        oftOps.project(param, radius);
    }

    @Override
    public void adamw(Tensor param, Tensor grad, Tensor m, Tensor v, OptimizerOps.AdamWStep step) {
        ctx.device.bind();
        policyOps.adamw(param, grad, m, v, step);
    }

    /** Waits for the stream (the statistics come back to the host). */
    @Override
    public OptimizerOps.GradientStats gradientStats(Tensor grad) {
        ctx.device.bind();
        return policyOps.gradientStats(java.util.List.of(grad))[0];
    }

    /** One launch a gradient and one wait for the stream for all of them (the statistics come back to the host). */
    @Override
    public OptimizerOps.GradientStats[] gradientStats(java.util.List<Tensor> grads) {
        ctx.device.bind();
        return policyOps.gradientStats(grads);
    }

    /** {@code y[M, N] = x[M, K] · wᵀ} with the fused dequantize-GEMV for f32 or bf16 x (any M; best at M ≤ 16). */
    public void gemvQuantized(Tensor x, QuantizedTensor w, Tensor y) {
        ctx.device.bind();
        ctx.devContiguous("gemvQuantized x", x, null);
        ctx.devContiguous("gemvQuantized y", y, DType.F32);
        QuantLayout layout = QuantLayout.of(w, ctx);
        int k = x.size(-1);
        int m = CudaContext.rows(x);
        int n = Math.toIntExact(w.rows());
        if (w.cols() != k || y.size(-1) != n || CudaContext.rows(y) != m) {
            throw new IllegalArgumentException("gemvQuantized: x " + x + " · wᵀ " + w + " -> y " + y + " do not agree");
        }
        if (m > 0) {
            matmulOps.qgemv.launch(CudaQgemv.MODE_DENSE, x, w, layout, y, m, Math.min(m, CudaQgemv.MAX_CHUNK), 1, null, null, n, k, 1);
        }
    }

    @Override
    public void dequantize(QuantizedTensor w, Tensor out) {
        ctx.device.bind();
        matmulOps.dequantize(w, out);
    }

    @Override
    public void rmsNorm(Tensor x, Tensor weight, float eps, Tensor out) {
        ctx.device.bind();
        rowOps.rmsNorm(x, weight, eps, out);
    }

    @Override
    public void addRmsNorm(Tensor a, Tensor b, Tensor sum, Tensor weight, float eps, Tensor out) {
        ctx.device.bind();
        rowOps.addRmsNorm(a, b, sum, weight, eps, out);
    }

    @Override
    public void softmax(Tensor x) {
        ctx.device.bind();
        rowOps.softmax(rowOps.softmax, x);
    }

    @Override
    public void logSoftmax(Tensor x) {
        ctx.device.bind();
        rowOps.softmax(rowOps.logSoftmax, x);
    }

    @Override
    public void silu(Tensor x, Tensor out) {
        ctx.device.bind();
        rowOps.unary("silu", rowOps.silu, x, out);
    }

    @Override
    public void swiglu(Tensor gate, Tensor up, Tensor out) {
        ctx.device.bind();
        rowOps.binary("swiglu", rowOps.swiglu, gate, up, out);
    }

    @Override
    public void add(Tensor a, Tensor b, Tensor out) {
        ctx.device.bind();
        rowOps.binary("add", rowOps.add, a, b, out);
    }

    @Override
    public void mul(Tensor a, Tensor b, Tensor out) {
        ctx.device.bind();
        rowOps.binary("mul", rowOps.mul, a, b, out);
    }

    @Override
    public void scale(Tensor x, float alpha, Tensor out) {
        ctx.device.bind();
        rowOps.scale(x, alpha, out);
    }

    @Override
    public void rope(Tensor x, Tensor positions, RopeTable table) {
        ctx.device.bind();
        attentionOps.rope(x, positions, table);
    }

    @Override
    public void attention(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec) {
        ctx.device.bind();
        attentionOps.attention(q, k, v, out, queryStart, spec);
    }

    @Override
    public boolean attentionWithStats(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec, Tensor lse) {
        ctx.device.bind();
        return attentionOps.attention(q, k, v, out, queryStart, spec, lse);
    }

    @Override
    public boolean keepsAttentionStats() {
        return exact ? CudaExactAttention.on() : CudaMmaAttention.variant().equals("bf16v4");
    }

    /** Unless {@code -Dorbit.cuda.mqa=off} (read at each call); in exact mode too, through its batch-invariant kernels. */
    @Override
    public boolean takesDeepseekV4Attention() {
        return !CudaMqaAttention.off();
    }

    /**
     * {@link CudaMqaAttention#sinkForward} (cuBLAS products around a row kernel); in exact mode
     * {@link CudaMqaAttention#sinkExact}, for heads of up to {@link CudaMqaAttention#EXACT_MAX_DIM} channels (wider ones
     * are left to the caller).
     */
    @Override
    public boolean sinkAttention(Tensor q, Tensor kv, Tensor mask, Tensor sinks, float scale, Tensor out) {
        if (!CudaMqaAttention.fitsSink(q, kv, mask, sinks, out) || (exact && q.size(2) > CudaMqaAttention.EXACT_MAX_DIM)) {
            return false;
        }
        ctx.device.bind();
        if (exact) {
            attentionOps.mqa.sinkExact(q, kv, mask, sinks, scale, out);
        } else {
            attentionOps.mqa.sinkForward(q, kv, mask, sinks, scale, out);
        }
        return true;
    }

    /**
     * {@link CudaMqaAttention#sinkDecode}: every sequence's decode query in one launch. Not in exact mode, whose
     * {@link #sinkAttention} computes each query as the training forward does.
     */
    @Override
    public boolean sinkDecodeAttention(Tensor q, Tensor[] windows, Tensor k, Tensor[] entries, int[][] chosen, Tensor sinks,
                                       float scale, Tensor out) {
        if (!CudaSinkDecode.fits(q, windows, k, entries, chosen, sinks, out) || exact) {
            return false;
        }
        ctx.device.bind();
        attentionOps.sinkDecode.attend(q, windows, k, entries, chosen, sinks, scale, out);
        return true;
    }

    /** {@link CudaMqaAttention#hyperConnectionMix}, in exact mode too (each row from its own values). */
    @Override
    public boolean hyperConnectionMix(Tensor m, Tensor base, float s0, float s1, float s2, int hc, int iters, float eps,
                                      Tensor y) {
        if (!CudaMqaAttention.fitsHyperConnectionMix(m, base, hc, y)) {
            return false;
        }
        ctx.device.bind();
        attentionOps.mqa.hyperConnectionMix(m, base, s0, s1, s2, hc, iters, eps, y);
        return true;
    }

    /** {@link CudaMqaAttention#hyperConnectionCollapse}, in exact mode too (each output from its own row, in the host's order). */
    @Override
    public boolean hyperConnectionCollapse(Tensor w, Tensor streams, Tensor y) {
        if (!CudaMqaAttention.fitsHyperConnection(w, null, streams, y)) {
            return false;
        }
        ctx.device.bind();
        attentionOps.mqa.hyperConnectionCollapse(w, streams, y);
        return true;
    }

    /** {@link CudaMqaAttention#hyperConnectionExpand}, in exact mode too. */
    @Override
    public boolean hyperConnectionExpand(Tensor w, Tensor f, Tensor streams, Tensor out) {
        if (!CudaMqaAttention.fitsHyperConnection(w, f, streams, out)) {
            return false;
        }
        ctx.device.bind();
        attentionOps.mqa.hyperConnectionExpand(w, f, streams, out);
        return true;
    }

    /**
     * {@link CudaMqaAttention#indexerScores}; in exact mode {@link CudaMqaAttention#indexerExact}, for index heads whose
     * tiles fit a block's shared memory (wider ones are left to the caller).
     */
    @Override
    public boolean indexerScores(Tensor q, Tensor keys, Tensor weights, Tensor closed, float qScale, Tensor out) {
        if (!CudaMqaAttention.fitsIndexer(q, keys, weights, closed, out)
                || (exact && !CudaMqaAttention.fitsIndexerExact(q.size(2)))) {
            return false;
        }
        ctx.device.bind();
        if (exact) {
            attentionOps.mqa.indexerExact(q, keys, weights, closed, qScale, out);
        } else {
            attentionOps.mqa.indexerScores(q, keys, weights, closed, qScale, out);
        }
        return true;
    }

    /**
     * {@link CudaMqaAttention#sinkBackward}, in exact mode too: gradients are compared with nothing bit for bit, so
     * exact mode's backward takes the f32 cuBLAS products (no TF32) over the probabilities it recomputes.
     */
    @Override
    public boolean sinkAttentionBackward(Tensor q, Tensor kv, Tensor mask, Tensor sinks, float scale, Tensor dout, Tensor dq,
                                         Tensor dkv) {
        if (!CudaMqaAttention.fitsSink(q, kv, mask, sinks, dout, dq, dkv)) {
            return false;
        }
        ctx.device.bind();
        attentionOps.mqa.sinkBackward(q, kv, mask, sinks, scale, dout, dq, dkv);
        return true;
    }

    /**
     * Decode attention over a paged KV cache laid out as the model's {@code kv.BlockPool}: one query
     * per sequence, at position {@code lens[b] − 1}.
     *
     * @param q         f32 [B, Hq, D], rope applied
     * @param kCache    f32 [blocks·blockSize, Hkv·D], one layer's keys
     * @param vCache    f32 [blocks·blockSize, Hkv·Dv]
     * @param tables    i32 [B, maxBlocks]: position s of sequence b is row tables[b, s / blockSize]·blockSize + s % blockSize
     * @param lens      i32 [B]: keys of each sequence, the current token's included (at least 1)
     * @param kvHeads   Hkv
     * @param out       f32 [B, Hq, Dv]
     */
    @Override
    public void pagedDecodeAttention(Tensor q, Tensor kCache, Tensor vCache, Tensor tables, Tensor lens, int blockSize, int kvHeads,
                                     Tensor out, AttentionSpec spec) {
        ctx.device.bind();
        if (vCache == null) {   // a latent cache: the values are the keys' leading channels
            attentionOps.latent.decode(q, kCache, tables, lens, blockSize, kvHeads, out, spec, exact);
            return;
        }
        if (exact) {   // the per-sequence attention kernel through the tables: a decode step equals the training forward bit for bit
            attentionOps.pagedExact(q, kCache, vCache, tables, lens, blockSize, kvHeads, out, spec);
            return;
        }
        attentionOps.flash.pagedDecode(q, kCache, vCache, tables, lens, blockSize, kvHeads, out, spec);
    }

    /**
     * The layer as one cooperative launch ({@link CudaDecodeLayer}) outside exact mode, where the launch takes it and
     * {@code -Dorbit.cuda.decodeLayer=on} (read at each call) asks for it: off by default, as on the H200 it is not yet faster
     * than the layer's separate launches (BENCHMARKS.md).
     */
    @Override
    public boolean decodeLayer(DecodeLayer layer, Tensor x, Tensor out, Tensor positions, RopeTable rope, Tensor kCache, Tensor vCache,
                               Tensor slots, Tensor tables, Tensor lens, int blockSize) {
        if (exact) {
            return false;
        }
        ctx.device.bind();
        return decodeLayer.layer(layer, x, out, positions, rope, kCache, vCache, slots, tables, lens, blockSize);
    }

    /** Outside exact mode, where {@code -Dorbit.cuda.decodeLayer=on} (read at each call) asks for the one-launch layers. */
    @Override
    public boolean decodesLayers() {
        return !exact && CudaDecodeLayer.asked();
    }

    /**
     * Records the phases of the following {@link #decodeLayer} launches into {@code trace} i64 [SMs, 16] (global-timer ns,
     * block by block; each launch overwrites the last), or stops (null): a bench's view of where the layer's time goes.
     */
    public void traceDecodeLayer(Tensor trace) {
        decodeLayer.trace(trace);
    }

    /** This backend's context, for the benches and probes of this package. */
    CudaContext context() {
        return ctx;
    }

    /** Decoder layers this backend ran as one launch ({@link #decodeLayer}) so far. */
    public long decodeLayerLaunches() {
        return decodeLayer.launches();
    }

    /** One launch ({@code qkv_prep3_f32}) outside exact mode; in exact mode the separate steps, as the training forward takes them. */
    @Override
    public void pagedDecodePrep(Tensor q, Tensor k, Tensor v, Tensor qNorm, Tensor kNorm, float eps, Tensor positions, RopeTable rope,
                                Tensor qOut, Tensor kCache, Tensor vCache, Tensor slots) {
        ctx.device.bind();
        if (exact) {
            Backend.super.pagedDecodePrep(q, k, v, qNorm, kNorm, eps, positions, rope, qOut, kCache, vCache, slots);
        } else {
            attentionOps.flash.qkvPrep3(q, k, v, qNorm, kNorm, eps, positions, rope, qOut, kCache, vCache, slots);
        }
    }

    /**
     * The preparation and the attention in one launch outside exact mode where {@link CudaFlashAttention#prepAttention}
     * applies (exact mode declines: its steps are the training forward's).
     */
    @Override
    public boolean pagedDecodePrepAttention(Tensor q, Tensor k, Tensor v, Tensor qNorm, Tensor kNorm, float eps, Tensor positions,
                                            RopeTable rope, Tensor kCache, Tensor vCache, Tensor slots, Tensor tables, Tensor lens,
                                            int blockSize, Tensor out, AttentionSpec spec) {
        ctx.device.bind();
        return !exact && attentionOps.flash.prepAttention(q, k, v, qNorm, kNorm, eps, positions, rope, kCache, vCache, slots, tables, lens,
                blockSize, out, spec);
    }

    /**
     * Decode attention inputs in one launch from the fused q/k/v projection: for each sequence b,
     * per q and k head an RMSNorm over the head dimension (when the norm weight is given, as
     * {@link #rmsNorm}), rope at {@code positions[b]} (as {@link #rope}), q into {@code qOut}, and k and v
     * written into the paged caches at row {@code slots[b]} (as {@link #pagedKvWrite}).
     *
     * @param qkv       f32 [B, Hq·D + Hkv·D + Hkv·Dv]: q heads, k heads, v heads
     * @param qNorm     f32 or bf16 [D], or null
     * @param kNorm     f32 or bf16 [D], or null
     * @param positions i32 [B]; one outside the table is reported by the next {@link #synchronize}
     * @param qOut      f32 [B, Hq, D]
     * @param slots     i32 [B]; negative: the sequence's k and v are not written
     */
    public void qkvPrep(Tensor qkv, int heads, int kvHeads, int headDim, int vHeadDim, Tensor qNorm, Tensor kNorm, float eps,
                        Tensor positions, RopeTable table, Tensor qOut, Tensor kCache, Tensor vCache, Tensor slots) {
        ctx.device.bind();
        attentionOps.flash.qkvPrep(qkv, heads, kvHeads, headDim, vHeadDim, qNorm, kNorm, eps, positions, table, qOut, kCache, vCache, slots);
    }

    /**
     * Writes one token per sequence into a paged cache: row {@code slots[b]} of the caches gets
     * {@code k[b]} and {@code v[b]} (k f32 [B, Hkv·D], v f32 [B, Hkv·Dv], slots i32 [B]; a negative slot
     * skips the sequence). No bounds check on slots: they come from the caller's block tables.
     */
    @Override
    public void pagedKvWrite(Tensor k, Tensor v, Tensor kCache, Tensor vCache, Tensor slots) {
        ctx.device.bind();
        attentionOps.flash.pagedKvWrite(k, v, kCache, vCache, slots);
    }

    /** The fused operations of a decode step at few tokens (norms, router selection, SwiGLU and combine folded into products). */
    public CudaFusedDecode fusedDecode() {
        return fusedDecode;
    }

    /** The mixture-of-experts operations: decode products, device routing, and the grouped block. */
    public CudaMoe moe() {
        return moe;
    }

    // the grouped mixture-of-experts block: see Backend's contracts and CudaMoe
    @Override
    public void moeTopk(Tensor probs, int k, boolean normalize, Tensor chosen, Tensor weights, Tensor ids) {
        moe.moeTopk(probs, k, normalize, chosen, weights, ids);
    }

    @Override
    public void moeGroup(Tensor ids, int experts, Tensor offsets, Tensor order, Tensor position) {
        moe.moeGroup(ids, experts, offsets, order, position);
    }

    @Override
    public void moeGather(Tensor src, Tensor order, int k, Tensor weights, Tensor dst) {
        moe.moeGather(src, order, k, weights, dst);
    }

    @Override
    public void moeExpertMatmul(Tensor xs, ExpertWeights experts, int[] offsets, Tensor ys, int chunk) {
        moe.moeExpertMatmul(xs, experts, offsets, ys, chunk);
    }

    @Override
    public void moeExpertMatmulShared(Tensor xs, ExpertWeights[] experts, int[] offsets, Tensor[] ys, int chunk) {
        moe.moeExpertMatmulShared(xs, experts, offsets, ys, chunk);
    }

    /** Exact mode's grouped products from the device offsets ({@link CudaExactExperts#matmulRouted}); false otherwise. */
    @Override
    public boolean moeExpertMatmulRouted(Tensor xs, ExpertWeights experts, Tensor offsets, float scale, Tensor ys, boolean accumulate) {
        return moe.moeExpertMatmulRouted(xs, experts, offsets, scale, ys, accumulate);
    }

    @Override
    public void moeExpertMatmulTransposed(Tensor dys, ExpertWeights experts, int[] offsets, Tensor dxs, int chunk) {
        moe.moeExpertMatmulTransposed(dys, experts, offsets, dxs, chunk);
    }

    @Override
    public void moeExpertWeightGrad(Tensor dys, Tensor xs, int[] offsets, float scale, Tensor[] grads) {
        moe.moeExpertWeightGrad(dys, xs, offsets, scale, grads);
    }

    @Override
    public void moeExpertMatmulAccumulate(Tensor xs, ExpertWeights experts, int[] offsets, float scale, Tensor ys, boolean transposed,
                                          int chunk) {
        moe.moeExpertMatmulAccumulate(xs, experts, offsets, scale, ys, transposed, chunk);
    }

    /**
     * True outside exact mode (unless {@code -Dorbit.cuda.moePairs=off}) for experts the pair kernels take (one
     * quantized format, or full precision of one dtype; see {@link CudaMoePairs#supports}): a decode step's experts
     * then run per pair through device tables ({@link CudaMoePairs}), nothing read on the host, so the step can be
     * captured. Exact mode keeps the grouped products, whose rows are computed as training computes them (an inference
     * forward's from the offsets on the device, {@link #moeExpertMatmulRouted}, so its decode steps are captured too).
     */
    @Override
    public boolean moePairs(ExpertWeights experts) {
        return moePairsOn && !exact && moePairs.supports(experts);
    }

    /** Turns the per-pair decode experts on or off for the calls issued from now on (see {@link #moePairs(ExpertWeights)}). */
    public void moePairs(boolean on) {
        this.moePairsOn = on;
    }

    @Override
    public void moeExpertMatmulPairs(Tensor x, int xDiv, ExpertWeights experts, Tensor ids, float scale, Tensor y, boolean accumulate) {
        ctx.device.bind();
        if (moePairs.matmul(x, xDiv, experts, ids, scale, y, accumulate)) {
            return;
        }
        // quantized experts scaled or added into y: the plain product into a temporary, then the axpy
        Tensor tmp = ctx.allocator.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, y.shape());
        try {
            moePairs.matmul(x, xDiv, experts, ids, 1f, tmp, false);
            if (accumulate) {
                axpy(scale, tmp, y);
            } else {
                scale(tmp, scale, y);
            }
        } finally {
            ctx.allocator.release(tmp);
        }
    }

    /** Two f32 LoRA A sets over the same grouped pairs in one launch ({@link CudaMoePairs#matmulShared}); else a call each. */
    @Override
    public void moeExpertMatmulPairsShared(Tensor x, int xDiv, ExpertWeights[] experts, Tensor ids, Tensor[] ys) {
        ctx.device.bind();
        if (!moePairs.matmulShared(x, xDiv, experts, ids, ys)) {
            Backend.super.moeExpertMatmulPairsShared(x, xDiv, experts, ids, ys);
        }
    }

    /**
     * Stacked INT4 gate and up experts from {@link CudaMoePairs#STACKED_PAIRS} pairs, with f32 LoRA terms or none: one
     * tensor-core launch ({@link CudaMoePairs#swiglu}); fewer pairs of stacked quantized experts, one GEMV launch
     * ({@link CudaMoeDecodePairs}); {@code -Dorbit.cuda.moeSwigluPairs=off} keeps the separate products.
     */
    @Override
    public boolean moeSwigluPairs(Tensor x, int xDiv, ExpertWeights gate, ExpertWeights up, Tensor ids, PairLora gateLora,
                                  PairLora upLora, Tensor act) {
        ctx.device.bind();
        return moePairs.swiglu(x, xDiv, gate, up, ids, gateLora, upLora, act);
    }

    /**
     * {@value #L2_AHEAD_PROPERTY} ({@code off|on|bulk}, read at each call; off by default): {@link #prefetchFrozen} hands
     * the tensors to the next router launch of a decode step's few tokens ({@code moe_router_norm_topk_pre} and its
     * add-norm form), whose threads ask the L2 for their bytes before the launch's wait, a {@code prefetch.global.L2} a
     * line ({@code on}) or bulk prefetches of 16 KiB ({@code bulk}), so that they stream while the router, bound by
     * latency, runs: Qwen3-MoE's decode step asks for the next layer's q, k and v there. The same values either way.
     */
    static final String L2_AHEAD_PROPERTY = "orbit.cuda.l2Ahead";

    @Override
    public void prefetchFrozen(Tensor... frozen) {
        String v = System.getProperty(L2_AHEAD_PROPERTY, "off");
        boolean bulk = switch (v) {
            case "off", "on" -> false;
            case "bulk" -> true;
            default -> throw new IllegalArgumentException("-D" + L2_AHEAD_PROPERTY + "=" + v + ": expected off, on or bulk");
        };
        if ("off".equals(v) || exact) {
            fusedDecode.router().prefetchFrozen(false);   // clears the asks
        } else {
            fusedDecode.router().prefetchFrozen(bulk, frozen);
        }
    }

    /** Stacked INT4 experts from {@link CudaMoePairs#STACKED_PAIRS} pairs with an f32 LoRA: one tensor-core launch ({@link CudaMoePairs#matmulLora}). */
    @Override
    public boolean moeExpertMatmulPairsLora(Tensor x, int xDiv, ExpertWeights experts, Tensor ids, PairLora lora, Tensor y) {
        ctx.device.bind();
        return moePairs.matmulLora(x, xDiv, experts, ids, lora, y);
    }

    /**
     * The logits, the softmax and the top k in one launch ({@link CudaDecodeRouter#moeRouterTopk}), above
     * {@link CudaMoePairs#DIRECT_PAIRS} pairs with the pairs grouped by expert for the expert calls on the same ids in the
     * same launch; outside exact mode, {@code -Dorbit.cuda.routerTopk=off} (read at each call) declines.
     */
    @Override
    public boolean moeRouterTopk(Tensor x, Tensor router, int k, boolean normalize, Tensor weights, Tensor ids) {
        if (exact || "off".equals(System.getProperty("orbit.cuda.routerTopk"))) {
            return false;
        }
        ctx.device.bind();
        int experts = router.rank() == 2 ? router.size(0) : 0;
        MoeRouting routing = experts > 0 ? moePairs.routingForRouter(experts, Math.toIntExact(ids.numel())) : null;
        CudaDecodeRouter.Router done = fusedDecode.router().moeRouterTopk(x, router, k, normalize, weights, ids, routing);
        if (done == CudaDecodeRouter.Router.SELECTED_AND_GROUPED) {
            moePairs.groupedBy(experts, ids);
        }
        return done != CudaDecodeRouter.Router.DECLINED;
    }

    /**
     * Where {@link #moeRouterTopk} takes its block-a-token launch (fewer than {@code orbit.cuda.routerTiles} tokens): the
     * same launch over {@code a + b}, writing the sum and its norm too ({@code moe_router_add_norm_topk}), one launch where
     * the residual add and norm took one more (a one-sequence Qwen3-30B-A3B step 1.6% faster on an H100). Declines
     * otherwise, with {@code -Dorbit.cuda.addNormRouter=off} (read at each call), with {@code orbit.cuda.routerTopk=off},
     * and in exact mode.
     */
    @Override
    public boolean addRmsNormRouterTopk(Tensor a, Tensor b, Tensor sum, Tensor normWeight, float eps, Tensor normed,
                                        Tensor router, int k, boolean normalize, Tensor weights, Tensor ids) {
        if (exact || "off".equals(System.getProperty("orbit.cuda.routerTopk"))
                || !Switches.onOff("orbit.cuda.addNormRouter", true)) {
            return false;
        }
        ctx.device.bind();
        return fusedDecode.router().addNormRouterTopk(a, b, sum, normWeight, eps, normed, router, k, normalize, weights, ids);
    }

    /**
     * Below {@link CudaMoePairs#STACKED_PAIRS} pairs (a decode step of one token at top-8), stacked quantized experts: the
     * down products, their LoRA terms and the combine in one launch ({@link CudaMoePairs#downCombine}).
     */
    @Override
    public boolean moeDownCombinePairs(Tensor act, ExpertWeights down, Tensor ids, PairLora lora, Tensor weights, Tensor out,
                                       boolean accumulate) {
        ctx.device.bind();
        return moePairs.downCombine(act, down, ids, lora, weights, out, accumulate);
    }

    @Override
    public void moeCombinePairs(Tensor ys, Tensor weights, Tensor out, boolean accumulate) {
        ctx.device.bind();
        moe.moeCombine(ys, weights, false, out, accumulate);
    }

    /** Routes of pairs by expert the per-pair products have launched. */
    int moePairRoutes() {
        return moePairs.routes();
    }

    /** Device tables of expert addresses the per-pair products hold. */
    int moePairTables() {
        return moePairs.tables();
    }

    @Override
    public void moeExpertBiasPairs(Tensor ys, Tensor bias, Tensor ids) {
        moe.moeExpertBiasPairs(ys, bias, ids);
    }

    @Override
    public void moeExpertBias(Tensor ys, Tensor bias, Tensor offsets) {
        moe.moeExpertBias(ys, bias, offsets);
    }

    @Override
    public void moeCombineGrouped(Tensor ys, Tensor position, Tensor weights, Tensor out, boolean accumulate) {
        moe.moeCombineGrouped(ys, position, weights, out, accumulate);
    }

    @Override
    public void blockGradTN(Tensor x, Tensor g, int bs, Tensor out) {
        ctx.device.bind();
        trainOps.blockGradTN(x, g, bs, out);
    }

    @Override
    public void moeWeightGrad(Tensor dout, Tensor ys, Tensor position, Tensor dWeight) {
        moe.moeWeightGrad(dout, ys, position, dWeight);
    }

    @Override
    public void moeSigmoidTopk(Tensor logits, Tensor bias, int groups, int topkGroups, int k, boolean normalize, float scaling,
                               Tensor scores, Tensor weights, Tensor ids) {
        moe.moeSigmoidTopk(logits, bias, groups, topkGroups, k, normalize, scaling, scores, weights, ids);
    }

    @Override
    public void moeScoreTopk(Tensor logits, boolean sqrtSoftplus, Tensor bias, Tensor fixed, int k, float scaling, Tensor scores,
                             Tensor weights, Tensor ids) {
        moe.moeScoreTopk(logits, sqrtSoftplus, bias, fixed, k, scaling, scores, weights, ids);
    }

    @Override
    public void moeSigmoidRouterBackward(Tensor scores, Tensor ids, Tensor dWeight, boolean normalize, float scaling, Tensor dLogits) {
        moe.moeSigmoidRouterBackward(scores, ids, dWeight, normalize, scaling, dLogits);
    }

    @Override
    public void moeRouterBackward(Tensor probs, Tensor chosen, Tensor weights, Tensor ids, Tensor dWeight, boolean normalize,
                                  Tensor dLogits) {
        moe.moeRouterBackward(probs, chosen, weights, ids, dWeight, normalize, dLogits);
    }

    @Override
    public void clampedSwiglu(Tensor gu, float alpha, float limit, Tensor out) {
        ctx.device.bind();
        layoutOps.clampedSwiglu(gu, alpha, limit, out);
    }

    @Override
    public void clampedSwigluBackward(Tensor gu, Tensor dout, float alpha, float limit, Tensor dgu) {
        ctx.device.bind();
        layoutOps.clampedSwigluBackward(gu, dout, alpha, limit, dgu);
    }

    @Override
    public void limitedSwiglu(Tensor gate, Tensor up, float limit, Tensor out) {
        ctx.device.bind();
        layoutOps.limitedSwiglu(gate, up, limit, out);
    }

    @Override
    public void limitedSwigluBackward(Tensor gate, Tensor up, Tensor dout, float limit, Tensor dgate, Tensor dup) {
        ctx.device.bind();
        layoutOps.limitedSwigluBackward(gate, up, dout, limit, dgate, dup);
    }

    @Override
    public void embedding(Tensor table, Tensor ids, Tensor out) {
        ctx.device.bind();
        selectOps.embedding(table, ids, out);
    }

    @Override
    public void topk(Tensor x, int k, Tensor values, Tensor indices) {
        ctx.device.bind();
        selectOps.topk(x, k, values, indices);
    }

    @Override
    public void argmax(Tensor x, Tensor out) {
        ctx.device.bind();
        selectOps.argmax(x, out);
    }

    /** Waits for outstanding work, then frees every device buffer, the kernels, cuBLAS and the stream. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        ctx.device.bind();
        ctx.stream.synchronize();
        ctx.close();
    }
}
