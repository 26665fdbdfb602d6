package org.orbitrl.kernels.cuda;

import static org.bytedeco.cuda.global.cudart.*;

/**
 * One GPU: its index and properties, and the binding of its primary context to the calling
 * thread. Every entry point of the CUDA backend calls {@link #bind} first, because driver-API
 * calls (module load, kernel launch) act on the thread's current context.
 */
public final class CudaDevice {
    private static final ThreadLocal<int[]> CURRENT = ThreadLocal.withInitial(() -> new int[]{-1});

    private final int index;
    private final String name;
    private final int ccMajor;
    private final int ccMinor;
    private final int multiprocessors;
    private final boolean cooperativeLaunch;
    private final long totalMemory;

    public CudaDevice(int index) {
        Cuda.require();
        if (index < 0 || index >= Cuda.deviceCount()) {
            throw new IllegalArgumentException("CUDA device " + index + " does not exist; " + Cuda.deviceCount() + " visible");
        }
        this.index = index;
        CudaCheck.driver(cuInit(0), "cuInit");
        bind();
        this.ccMajor = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "compute capability major");
        this.ccMinor = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "compute capability minor");
        this.multiprocessors = attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "multiprocessor count");
        this.cooperativeLaunch = attribute(CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH, "cooperative launch") != 0;
        byte[] nameBytes = new byte[256];
        int[] dev = new int[1];
        CudaCheck.driver(cuDeviceGet(dev, index), "cuDeviceGet", index);
        CudaCheck.driver(cuDeviceGetName(nameBytes, nameBytes.length, dev[0]), "cuDeviceGetName", index);
        int n = 0;
        while (n < nameBytes.length && nameBytes[n] != 0) {
            n++;
        }
        this.name = new String(nameBytes, 0, n, java.nio.charset.StandardCharsets.UTF_8);
        org.bytedeco.javacpp.SizeTPointer total = new org.bytedeco.javacpp.SizeTPointer(1);
        CudaCheck.driver(cuDeviceTotalMem(total, dev[0]), "cuDeviceTotalMem", index);
        this.totalMemory = total.get();
    }

    private int attribute(int attr, String what) {
        int[] v = new int[1];
        CudaCheck.check(cudaDeviceGetAttribute(v, attr, index), "cudaDeviceGetAttribute " + what, "device " + index);
        return v[0];
    }

    /** Makes this device (its primary context) current on the calling thread. Cheap when it already is. */
    public void bind() {
        int[] cur = CURRENT.get();
        if (cur[0] != index) {
            CudaCheck.check(cudaSetDevice(index), "cudaSetDevice", index);
            cur[0] = index;
        }
    }

    public int index() {
        return index;
    }

    public String name() {
        return name;
    }

    public int computeCapabilityMajor() {
        return ccMajor;
    }

    public int computeCapabilityMinor() {
        return ccMinor;
    }

    public int multiprocessors() {
        return multiprocessors;
    }

    /** Whether the device runs cooperative launches (grids whose blocks are all resident at once). */
    public boolean cooperativeLaunch() {
        return cooperativeLaunch;
    }

    public long totalMemory() {
        return totalMemory;
    }

    /** Free and total device memory as the driver sees them now, in bytes. */
    public long[] memoryInfo() {
        bind();
        org.bytedeco.javacpp.SizeTPointer free = new org.bytedeco.javacpp.SizeTPointer(1);
        org.bytedeco.javacpp.SizeTPointer total = new org.bytedeco.javacpp.SizeTPointer(1);
        CudaCheck.check(cudaMemGetInfo(free, total), "cudaMemGetInfo", index);
        return new long[]{free.get(), total.get()};
    }

    @Override
    public String toString() {
        return "cuda:" + index + " (" + name + ", sm_" + ccMajor + ccMinor + ", " + multiprocessors + " SMs, "
                + totalMemory / (1L << 20) + " MiB)";
    }
}
