package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.cuda.cudart.CUstream_st;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaCheck;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.bytedeco.cuda.global.cudart.cuLaunchKernel;

/**
 * Marshals kernel arguments and calls {@code cuLaunchKernel}. Each thread has one native block of
 * argument slots and the {@code void*[]} pointing at them, allocated once and kept for the life of
 * the thread (the driver copies the values during the call, so the next launch may overwrite them;
 * no argument memory is ever left to a garbage collector while the driver reads it).
 *
 * <p>Arguments: {@link Long} (a 64-bit value or device address), {@link Integer} (int),
 * {@link Float} (float), {@link Tensor} (the device address of its first element) and
 * {@code null} (a null pointer).
 */
public final class Launcher {
    private static final int MAX_ARGS = 64;

    /** values: [MAX_ARGS] 8-byte slots; table: [MAX_ARGS] pointers into values; pointers: table as JavaCPP sees it. */
    private record Slots(MemorySegment values, MemorySegment table, PointerArray pointers) {
    }

    private static final ThreadLocal<Slots> SLOTS = ThreadLocal.withInitial(() -> {
        // [MAX_ARGS] 8-byte values and [MAX_ARGS] pointers into them; lives as long as the thread.
        MemorySegment values = Arena.ofAuto().allocate(8L * MAX_ARGS, 16);
        MemorySegment pointers = Arena.ofAuto().allocate(8L * MAX_ARGS, 16);
        for (int i = 0; i < MAX_ARGS; i++) {
            pointers.setAtIndex(ValueLayout.JAVA_LONG, i, values.address() + 8L * i);
        }
        return new Slots(values, pointers, new PointerArray(pointers.address()));
    });

    private Launcher() {
    }

    public static void launch(Kernel kernel, CUstream_st stream, long gridX, int gridY, int blockX, int sharedBytes, Object... args) {
        if (gridX <= 0 || gridX > Integer.MAX_VALUE || gridY <= 0 || args.length > MAX_ARGS) {
            throw new IllegalArgumentException("kernel " + kernel + ": bad grid " + gridX + "x" + gridY + " or " + args.length + " arguments");
        }
        kernel.allowShared(sharedBytes);
        Slots slots = SLOTS.get();
        MemorySegment values = slots.values;
        for (int i = 0; i < args.length; i++) {
            long slot = 8L * i;
            switch (args[i]) {
                case null -> values.set(ValueLayout.JAVA_LONG, slot, 0L);
                case Long l -> values.set(ValueLayout.JAVA_LONG, slot, l);
                case Integer n -> values.set(ValueLayout.JAVA_INT, slot, n);
                case Float f -> values.set(ValueLayout.JAVA_FLOAT, slot, f);
                case Tensor t -> values.set(ValueLayout.JAVA_LONG, slot, t.segment().address() + t.byteOffset());
                default -> throw new IllegalArgumentException("kernel " + kernel + ": argument " + i
                        + " of type " + args[i].getClass().getSimpleName() + " cannot be passed");
            }
        }
        int err = cuLaunchKernel(kernel.function(), (int) gridX, gridY, 1, blockX, 1, 1, sharedBytes, stream,
                slots.pointers, (PointerArray) null);
        if (err != 0) {
            CudaCheck.driver(err, "cuLaunchKernel " + kernel, "grid " + gridX + "x" + gridY, "block " + blockX,
                    "shared " + sharedBytes + " B", args.length + " arguments");
        }
    }
}
