package org.orbitrl.kernels;

import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.cpu.ScalarBackend;

/**
 * Picks the backend from {@code -Dorbit.kernels}: {@code scalar} (the plain reference) or
 * {@code cpu} (Vector API, multi-threaded; the default).
 */
public final class Backends {
    private Backends() {
    }

    public static Backend cpu() {
        String k = System.getProperty("orbit.kernels", "cpu");
        return switch (k) {
            case "scalar" -> new ScalarBackend();
            case "cpu" -> new CpuBackend();
            default -> throw new IllegalArgumentException("-Dorbit.kernels=" + k + ": expected 'cpu' or 'scalar'");
        };
    }
}
