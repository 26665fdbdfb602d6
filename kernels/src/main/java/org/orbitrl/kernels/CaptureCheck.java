package org.orbitrl.kernels;

import java.util.function.Supplier;

/**
 * The host side of capture checking: while a thread runs work under {@link #during}, the
 * operations a captured device step must not contain ({@link TensorAllocator#upload},
 * {@link TensorAllocator#toHost}) throw {@link NotCapturableException} on host allocators too,
 * so that a CPU run proves a step capturable on a device.
 */
public final class CaptureCheck {
    private static final ThreadLocal<String> ACTIVE = new ThreadLocal<>();

    private CaptureCheck() {
    }

    /** Runs {@code work} with checking on for this thread; {@code what} names the step in messages. */
    public static Tensor during(String what, Supplier<Tensor> work) {
        String outer = ACTIVE.get();
        ACTIVE.set(what);
        try {
            return work.get();
        } finally {
            if (outer == null) {
                ACTIVE.remove();
            } else {
                ACTIVE.set(outer);
            }
        }
    }

    /** True while this thread runs work under {@link #during}. */
    public static boolean active() {
        return ACTIVE.get() != null;
    }

    /** Throws {@link NotCapturableException} naming {@code operation} when checking is on for this thread. */
    public static void check(String operation) {
        String what = ACTIVE.get();
        if (what != null) {
            throw new NotCapturableException(operation + " inside " + what);
        }
    }
}
