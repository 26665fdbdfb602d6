package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.cuda.internal.DevicePointer;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

import static org.bytedeco.cuda.global.cudart.*;

/** Raises the error a kernel reported through the context's device error flag (after a synchronize). */
final class CudaKernelErrors {
    private CudaKernelErrors() {
    }

    /** Reads the flag; when set, clears it and throws the matching exception. */
    static void raise(CudaContext ctx) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment flag = a.allocate(16, 16);
            CudaCheck.check(cudaMemcpy(new DevicePointer(flag.address()), new DevicePointer(CudaAllocator.address(ctx.errorFlag)),
                    16, cudaMemcpyDeviceToHost), "cudaMemcpy error flag");
            int code = flag.get(ValueLayout.JAVA_INT, 0);
            if (code == 0) {
                return;
            }
            long value = (flag.get(ValueLayout.JAVA_INT, 4) & 0xFFFFFFFFL) | ((long) flag.get(ValueLayout.JAVA_INT, 8) << 32);
            int row = flag.get(ValueLayout.JAVA_INT, 12);
            CudaCheck.check(cudaMemsetAsync(new DevicePointer(CudaAllocator.address(ctx.errorFlag)), 0, 16, ctx.stream.handle()),
                    "cudaMemsetAsync error flag");
            throw switch (code) {
                case 1 -> new IndexOutOfBoundsException("embedding: token id " + value + " (row " + row + ") is outside the vocabulary");
                case 2 -> new IndexOutOfBoundsException("rope: position " + value + " (token " + row + ") is outside the rope table");
                case 3 -> new IndexOutOfBoundsException("routed experts: expert id " + value + (row >= 0 ? " (pair " + row + ")" : "")
                        + " is outside the layer's experts");
                case 4 -> new IndexOutOfBoundsException("gatherRows/scatterAddRows: row " + value + " (index " + row + ") is outside the tensor");
                case 5 -> new IndexOutOfBoundsException("routed experts: expert id " + value + (row >= 0 ? " (pair " + row + ")" : "")
                        + " is not held by this rank (its table entry is empty)");
                default -> new IllegalStateException("kernel error code " + code + " value " + value + " row " + row);
            };
        }
    }

}
