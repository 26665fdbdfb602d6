package org.orbitrl.kernels.cuda;

import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.Loader;

/**
 * Whether this process can use CUDA, probed once. The probe loads JavaCPP's CUDA bindings, which
 * link against the system's {@code libcudart.so.13}, {@code libcublas.so.13}, {@code libnvrtc.so.13}
 * and {@code libcuda.so.1}; on a machine without them the load fails with a {@link LinkageError},
 * which is turned into "unavailable" with the reason, never into a crash. Setting
 * {@code -Dorbit.cuda=off} makes CUDA unavailable without probing.
 */
public final class Cuda {
    private static volatile Probe probe;

    private record Probe(int devices, String reason) {
    }

    private Cuda() {
    }

    /** True when the bindings load and at least one device answers. */
    public static boolean available() {
        return probe().devices > 0;
    }

    /** Why CUDA is unavailable (empty when it is available). */
    public static String unavailableReason() {
        return probe().reason;
    }

    /** Number of visible devices (0 when unavailable). */
    public static int deviceCount() {
        return probe().devices;
    }

    /** Throws {@link IllegalStateException} with the reason unless CUDA is available. */
    public static void require() {
        Probe p = probe();
        if (p.devices == 0) {
            throw new IllegalStateException("CUDA is not available: " + p.reason);
        }
    }

    private static Probe probe() {
        Probe p = probe;
        if (p == null) {
            synchronized (Cuda.class) {
                p = probe;
                if (p == null) {
                    p = doProbe();
                    probe = p;
                }
            }
        }
        return p;
    }

    private static Probe doProbe() {
        if ("off".equals(System.getProperty("orbit.cuda"))) {
            return new Probe(0, "disabled by -Dorbit.cuda=off");
        }
        try {
            Loader.load(cudart.class);
            Loader.load(org.bytedeco.cuda.global.cublas.class);
            Loader.load(org.bytedeco.cuda.global.nvrtc.class);
        } catch (LinkageError e) {
            StringBuilder why = new StringBuilder();
            for (Throwable t = e; t != null && why.length() < 2000; t = t.getCause()) {
                why.append(why.isEmpty() ? "" : "; caused by ").append(t.getClass().getSimpleName()).append(": ").append(t.getMessage());
            }
            return new Probe(0, "CUDA libraries could not be loaded (" + why
                    + "); needs libcudart.so.13, libcublas.so.13, libnvrtc.so.13 and libcuda.so.1 on the loader path");
        }
        int[] n = new int[1];
        int err = cudart.cudaGetDeviceCount(n);
        if (err != 0) {
            return new Probe(0, "cudaGetDeviceCount: " + CudaCheck.runtimeError(err));
        }
        if (n[0] == 0) {
            return new Probe(0, "the driver reports no CUDA device");
        }
        return new Probe(n[0], "");
    }
}
