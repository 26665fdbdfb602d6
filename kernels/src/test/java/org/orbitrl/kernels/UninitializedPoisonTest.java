package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.cpu.CpuBackend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * {@link TensorAllocator#allocateUninitialized} on host memory with its poisoning on (the test JVMs run with
 * {@code -Dorbit.poisonUninitialized=true}): every element reads NaN (f32, bf16) or the most negative int (i32), so an
 * output an operation leaves partly unwritten shows in what reads it; {@link TensorAllocator#allocate} still zero-fills.
 */
class UninitializedPoisonTest {

    @Test
    void poisoningIsOnInTheTestJvm() {
        assertTrue(TensorAllocator.poisonUninitialized(),
                "the test JVMs must run with -Dorbit.poisonUninitialized=true (parent pom, surefire argLine)");
    }

    @Test
    void uninitializedHostTensorsArePoisonedAndAllocatedOnesZero() {
        try (CpuBackend cpu = new CpuBackend(1)) {
            TensorAllocator a = cpu.allocator();
            Tensor f = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, 3, 5);    // [3, 5]
            Tensor h = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.BF16, 9);      // [9]
            Tensor i = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.I32, 7);       // [7]
            float[] fv = f.toFloatArray();
            float[] hv = h.toFloatArray();
            for (int k = 0; k < fv.length; k++) {
                if (!Float.isNaN(fv[k])) {
                    fail("uninitialized f32 element " + k + " reads " + fv[k] + ", expected NaN");
                }
            }
            for (int k = 0; k < hv.length; k++) {
                if (!Float.isNaN(hv[k])) {
                    fail("uninitialized bf16 element " + k + " reads " + hv[k] + ", expected NaN");
                }
            }
            long[] iv = i.toLongArray();
            for (int k = 0; k < iv.length; k++) {
                assertEquals(Integer.MIN_VALUE, iv[k], "uninitialized i32 element " + k);
            }
            float[] zv = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 4, 4).toFloatArray();
            for (int k = 0; k < zv.length; k++) {
                assertEquals(0f, zv[k], "allocated f32 element " + k);
            }
        }
    }
}
