package org.orbitrl.kernels;

import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.cpu.ScalarBackend;
import org.orbitrl.kernels.cuda.Cuda;
import org.orbitrl.kernels.cuda.CudaBackend;

/**
 * Picks the backend by name: {@code scalar} (the plain reference), {@code cpu} (Vector API,
 * multi-threaded; the default), {@code cuda} or {@code cuda:N} (GPU N, default 0; exact mode with
 * {@code -Dorbit.cuda.exact=true}). {@link #cpu()} and {@link #fromProperty()} read the name from
 * {@code -Dorbit.kernels}.
 */
public final class Backends {
    private Backends() {
    }

    /** The backend {@code -Dorbit.kernels} names, {@code cpu} when unset. */
    public static Backend fromProperty() {
        return named(System.getProperty("orbit.kernels", "cpu"));
    }

    /**
     * The host backend {@code -Dorbit.kernels} names ({@code cpu} or {@code scalar}); for code that
     * reads tensors on the host. A GPU name there is refused with a message saying so.
     */
    public static Backend cpu() {
        String k = System.getProperty("orbit.kernels", "cpu");
        if (k.startsWith("cuda")) {
            throw new IllegalArgumentException("-Dorbit.kernels=" + k + ": this code path runs on the host only; "
                    + "expected 'cpu' or 'scalar'");
        }
        return named(k);
    }

    /**
     * The backend called {@code name}: {@code cpu}, {@code scalar}, {@code cuda} or {@code cuda:N}.
     *
     * @throws IllegalArgumentException for an unknown name
     * @throws IllegalStateException    for a CUDA name when no GPU or CUDA library is present, saying what was tried
     */
    public static Backend named(String name) {
        String k = name.trim().toLowerCase(java.util.Locale.ROOT);
        if (k.equals("scalar")) {
            return new ScalarBackend();
        }
        if (k.equals("cpu")) {
            return new CpuBackend();
        }
        if (k.equals("cuda") || k.startsWith("cuda:")) {
            int device = 0;
            if (k.startsWith("cuda:")) {
                try {
                    device = Integer.parseInt(k.substring(5));
                } catch (NumberFormatException e) {
                    throw new IllegalArgumentException("backend '" + name + "': expected cuda:N with N a device number", e);
                }
            }
            if (!Cuda.available()) {
                throw new IllegalStateException("backend '" + name + "' needs a CUDA GPU, but " + Cuda.unavailableReason());
            }
            if (device < 0 || device >= Cuda.deviceCount()) {
                throw new IllegalStateException("backend '" + name + "': device " + device + " does not exist ("
                        + Cuda.deviceCount() + " visible)");
            }
            return new CudaBackend(device, CudaBackend.defaultCacheDir(), Boolean.getBoolean("orbit.cuda.exact"));
        }
        throw new IllegalArgumentException("backend '" + name + "': expected 'cpu', 'scalar', 'cuda' or 'cuda:N'");
    }
}
