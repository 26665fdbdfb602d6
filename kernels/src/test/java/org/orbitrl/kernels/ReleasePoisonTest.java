package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.cpu.CpuBackend;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * {@link TensorAllocator#release} on host memory with release poisoning on (the test JVMs run with
 * {@code -Dorbit.poisonReleased=true}): a released whole tensor reads NaN (f32) or the most negative
 * int (i32), so any use after release shows; a view that does not cover its allocation is left as
 * it was; releasing twice is harmless.
 */
class ReleasePoisonTest {

    @Test
    void poisoningIsOnInTheTestJvm() {
        assertTrue(TensorAllocator.poisonReleased(),
                "the test JVMs must run with -Dorbit.poisonReleased=true (parent pom, surefire argLine)");
    }

    @Test
    void releasedHostTensorsArePoisoned() {
        SplittableRandom r = new SplittableRandom(42);
        try (CpuBackend cpu = new CpuBackend(1)) {
            TensorAllocator a = cpu.allocator();
            Tensor f = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 3, 5);   // [3, 5]
            Tensor i = a.allocate(MemoryCategory.ACTIVATIONS, DType.I32, 7);      // [7]
            for (int k = 0; k < 15; k++) {
                f.setFloat((float) r.nextDouble(-1, 1), k / 5, k % 5);
            }
            for (int k = 0; k < 7; k++) {
                i.setLong(r.nextInt(1, 1000), k);
            }
            a.release(f.reshape(15));   // a reshape covers the whole allocation
            a.release(i);
            float[] fv = f.toFloatArray();
            for (int k = 0; k < fv.length; k++) {
                if (!Float.isNaN(fv[k])) {
                    fail("released f32 element " + k + " reads " + fv[k] + ", expected NaN");
                }
            }
            long[] iv = i.toLongArray();
            for (int k = 0; k < iv.length; k++) {
                assertEquals(Integer.MIN_VALUE, iv[k], "released i32 element " + k);
            }
            a.release(f);   // twice: still poisoned, nothing else touched
            assertTrue(Float.isNaN(f.getFloat(2, 4)), "element [2, 4] after a second release");
        }
    }

    @Test
    void viewsThatDoNotCoverTheAllocationAreLeftAlone() {
        SplittableRandom r = new SplittableRandom(7);
        TensorAllocator a = TensorAllocator.heap();
        Tensor t = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 4, 6);   // [4, 6]
        float[] want = new float[24];
        for (int k = 0; k < 24; k++) {
            want[k] = (float) r.nextDouble(0.5, 2);
            t.setFloat(want[k], k / 6, k % 6);
        }
        a.release(t.slice(0, 1, 3));   // rows 1..2: starts inside the allocation
        a.release(t.slice(0, 0, 2));   // rows 0..1: starts at the allocation but does not cover it
        float[] got = t.toFloatArray();
        for (int k = 0; k < 24; k++) {
            if (Float.floatToRawIntBits(got[k]) != Float.floatToRawIntBits(want[k])) {
                fail("element " + k + " changed by releasing a partial view: " + got[k] + " instead of " + want[k]);
            }
        }
    }
}
