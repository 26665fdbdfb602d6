package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.cuda.cudart.CUfunc_st;
import org.bytedeco.cuda.cudart.CUlaunchAttribute;
import org.bytedeco.cuda.cudart.CUlaunchConfig;
import org.bytedeco.javacpp.Pointer;
import org.orbitrl.kernels.cuda.CudaCheck;

import static org.bytedeco.cuda.global.cudart.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
import static org.bytedeco.cuda.global.cudart.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED;
import static org.bytedeco.cuda.global.cudart.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES;
import static org.bytedeco.cuda.global.cudart.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
import static org.bytedeco.cuda.global.cudart.cuOccupancyMaxActiveClusters;
import static org.bytedeco.cuda.global.cudart.cuFuncGetAttribute;
import static org.bytedeco.cuda.global.cudart.cuFuncSetAttribute;
import static org.bytedeco.cuda.global.cudart.cuOccupancyMaxActiveBlocksPerMultiprocessor;

/**
 * A kernel of the library, resolved (its module compiled and loaded) on first launch and cached,
 * so the launch path does no lookup and builds no strings. A kernel that waits for its predecessor
 * (its body starts with {@code pdl_enter()}; the list is {@link DependentKernels}) is launched as a
 * programmatic dependent of the kernel before it on the stream while the library's dependent
 * launches are on.
 */
public final class Kernel {
    /** Dynamic shared memory every kernel may use without opting in. */
    static final int DEFAULT_SHARED = 48 * 1024;

    private final KernelLibrary library;
    private final String file;
    private final String name;
    private final boolean waitsForPredecessor;
    private CUfunc_st function;
    private int sharedOptIn = -1;             // dynamic shared memory the function may be launched with (-1: not asked yet)
    private int staticShared = -1;            // the function's static shared memory, once asked
    private final int[] residentShape = {-1, -1}; // block size and dynamic shared memory of `resident`
    private int resident;                     // blocks an SM holds at that shape
    private boolean nonPortableClusters;      // allowed clusters past the portable 8 blocks
    private final java.util.Map<Long, Boolean> clusterShapes = new java.util.HashMap<>(); // (cluster, block, shared) -> fits

    Kernel(KernelLibrary library, String file, String name) {
        this.library = library;
        this.file = file;
        this.name = name;
        this.waitsForPredecessor = DependentKernels.waitsForPredecessor(file, name);
    }

    public String name() {
        return name;
    }

    /** Whether the kernel's first statement waits for the kernel before it (so it may be launched before that one ends). */
    public boolean waitsForPredecessor() {
        return waitsForPredecessor;
    }

    /** Whether the next launch of this kernel is a programmatic dependent launch ({@code cuLaunchKernelEx}). */
    boolean dependentLaunch() {
        return waitsForPredecessor && library.dependentLaunches();
    }

    CUfunc_st function() {
        CUfunc_st f = function;
        if (f == null) {
            f = library.function(file, name);
            function = f;
        }
        return f;
    }

    /**
     * Lets launches of this kernel take up to {@code bytes} of dynamic shared memory (the driver
     * allows 48 KiB unless asked for more, up to the device's opt-in limit). Launches above 48 KiB
     * opt in by themselves; calling this ahead keeps the attribute call out of a graph capture.
     */
    public void allowDynamicShared(int bytes) {
        allowShared(bytes);
    }

    /** Bytes of static shared memory the compiled function declares (to be added to any dynamic size); asked of the driver once. */
    public int staticSharedBytes() {
        if (staticShared < 0) {
            int[] v = new int[1];
            int err = cuFuncGetAttribute(v, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, function());
            if (err != 0) {
                CudaCheck.driver(err, "cuFuncGetAttribute static shared memory of " + this);
            }
            staticShared = v[0];
        }
        return staticShared;
    }

    /**
     * Blocks of {@code blockSize} threads and {@code sharedBytes} of dynamic shared memory one SM holds at once
     * (0: none fits); the driver is asked again only when the launch shape changes.
     */
    public int residentBlocksPerSm(int blockSize, int sharedBytes) {
        if (blockSize != residentShape[0] || sharedBytes != residentShape[1]) {
            allowShared(sharedBytes);
            int[] n = new int[1];
            int err = cuOccupancyMaxActiveBlocksPerMultiprocessor(n, function(), blockSize, sharedBytes);
            if (err != 0) {
                CudaCheck.driver(err, "cuOccupancyMaxActiveBlocksPerMultiprocessor " + this, "block " + blockSize, "shared " + sharedBytes + " B");
            }
            residentShape[0] = blockSize;
            residentShape[1] = sharedBytes;
            resident = n[0];
        }
        return resident;
    }

    /**
     * Opts the function in to {@code bytes} of dynamic shared memory when it is above what it may use now: without opting
     * in, 48 KiB less the function's static shared memory (a launch of 48 KiB of dynamic memory beside any static memory
     * is refused with an invalid value).
     */
    void allowShared(int bytes) {
        if (sharedOptIn < 0) {
            sharedOptIn = DEFAULT_SHARED - staticSharedBytes();
        }
        if (bytes > sharedOptIn) {
            int err = cuFuncSetAttribute(function(), CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes);
            if (err != 0) {
                CudaCheck.driver(err, "cuFuncSetAttribute max dynamic shared memory of " + this, bytes + " B");
            }
            sharedOptIn = bytes;
        }
    }

    /**
     * Whether this kernel can be launched in clusters of {@code clusterX} blocks of {@code blockX} threads and {@code
     * sharedBytes} of dynamic shared memory here: built for sm_90 or newer, the cluster size allowed (past 8 the driver is
     * asked), and at least one such cluster resident at once ({@code cuOccupancyMaxActiveClusters}). Asked of the driver
     * once a shape; false where the driver refuses, never an error.
     */
    public boolean clustersFit(int clusterX, int blockX, int sharedBytes) {
        long key = ((long) clusterX << 48) | ((long) blockX << 32) | (sharedBytes & 0xffffffffL);
        Boolean fits = clusterShapes.get(key);
        if (fits == null) {
            fits = askClusters(clusterX, blockX, sharedBytes);
            clusterShapes.put(key, fits);
        }
        return fits;
    }

    private boolean askClusters(int clusterX, int blockX, int sharedBytes) {
        if (!library.dependentLaunchesSupported() || clusterX < 1 || clusterX > 16) {
            return false;
        }
        allowShared(sharedBytes);
        if (clusterX > 8 && nonPortableClusterError() != 0) {
            return false;
        }
        CUlaunchAttribute dim = new CUlaunchAttribute();
        Pointer.memset(dim, 0, dim.sizeof());
        dim.id(CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION);
        dim.value().clusterDim_x(clusterX).clusterDim_y(1).clusterDim_z(1);
        CUlaunchConfig config = new CUlaunchConfig();
        Pointer.memset(config, 0, config.sizeof());
        config.gridDimX(clusterX).gridDimY(1).gridDimZ(1).blockDimX(blockX).blockDimY(1).blockDimZ(1).sharedMemBytes(sharedBytes);
        config.attrs(dim);
        config.numAttrs(1);
        int[] n = new int[1];
        int err = cuOccupancyMaxActiveClusters(n, function(), config);
        java.lang.ref.Reference.reachabilityFence(dim);   // the config points at it; nothing else holds it
        return err == 0 && n[0] > 0;
    }

    /** Allows launches in clusters of {@code blocks} (past the portable 8, the driver is asked once; sm_90 takes 16). */
    void allowClusterSize(int blocks) {
        int err = blocks > 8 ? nonPortableClusterError() : 0;
        if (err != 0) {
            CudaCheck.driver(err, "cuFuncSetAttribute non-portable cluster size of " + this, blocks + " blocks a cluster");
        }
    }

    /** Asks the driver, once, to allow clusters past the portable 8 blocks: its error code, 0 once allowed. */
    private int nonPortableClusterError() {
        if (!nonPortableClusters) {
            int err = cuFuncSetAttribute(function(), CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1);
            if (err != 0) {
                return err;
            }
            nonPortableClusters = true;
        }
        return 0;
    }

    @Override
    public String toString() {
        return file + ".cu:" + name;
    }
}
