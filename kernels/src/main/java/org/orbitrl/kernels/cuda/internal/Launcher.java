package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.cuda.cudart.CUfunc_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaCheck;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.bytedeco.cuda.global.cudart.cuLaunchKernel;

/**
 * Marshals kernel arguments and calls {@code cuLaunchKernel}. The argument values and the
 * {@code void*[]} that points at them live in a confined {@link Arena} that is closed only after
 * the launch call has returned (the driver copies the values during the call), so no argument
 * memory can be freed by a garbage collector while the driver still reads it.
 *
 * <p>Arguments: {@link Long} (a 64-bit value or device address), {@link Integer} (int),
 * {@link Float} (float), {@link Tensor} (the device address of its first element) and
 * {@code null} (a null pointer).
 */
public final class Launcher {
    private Launcher() {
    }

    public static void launch(CUfunc_st function, String name, CUstream_st stream,
                              long gridX, int gridY, int blockX, int sharedBytes, Object... args) {
        if (gridX <= 0 || gridX > Integer.MAX_VALUE || gridY <= 0) {
            throw new IllegalArgumentException("kernel " + name + ": bad grid " + gridX + "x" + gridY);
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment values = arena.allocate(8L * Math.max(1, args.length), 8); // one 8-byte slot per argument
            MemorySegment pointers = arena.allocate(8L * Math.max(1, args.length), 8); // void*[] into values
            for (int i = 0; i < args.length; i++) {
                long slot = 8L * i;
                switch (args[i]) {
                    case null -> values.set(ValueLayout.JAVA_LONG, slot, 0L);
                    case Long l -> values.set(ValueLayout.JAVA_LONG, slot, l);
                    case Integer n -> values.set(ValueLayout.JAVA_INT, slot, n);
                    case Float f -> values.set(ValueLayout.JAVA_FLOAT, slot, f);
                    case Tensor t -> values.set(ValueLayout.JAVA_LONG, slot, t.segment().address() + t.byteOffset());
                    default -> throw new IllegalArgumentException("kernel " + name + ": argument " + i
                            + " of type " + args[i].getClass().getSimpleName() + " cannot be passed");
                }
                pointers.set(ValueLayout.JAVA_LONG, slot, values.address() + slot);
            }
            int err = cuLaunchKernel(function, (int) gridX, gridY, 1, blockX, 1, 1, sharedBytes, stream,
                    new PointerArray(pointers.address()), (PointerArray) null);
            CudaCheck.driver(err, "cuLaunchKernel " + name, "grid " + gridX + "x" + gridY, "block " + blockX,
                    "shared " + sharedBytes + " B", args.length + " arguments");
        }
    }
}
