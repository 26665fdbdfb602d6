package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;

/** The host tensors a model keeps for offloaded inputs: given back, the next take of as many values reuses the memory. */
class HostBuffersTest {
    @Test
    void aTensorGivenBackIsTakenAgainForTheSameSizeOnly() {
        HostBuffers b = new HostBuffers();
        Tensor t = b.take(DType.F32, 6, 4);
        assertArrayEquals(new long[]{6, 4}, t.shape());
        t.fill(2.5f);
        Tensor other = b.take(DType.F32, 6, 4);
        assertNotSame(t.segment(), other.segment(), "a tensor not given back is not handed out twice");
        b.give(t);
        assertEquals(96, b.freeBytes());
        assertNotSame(t.segment(), b.take(DType.F32, 5, 4).segment(), "another size: a new tensor");
        assertNotSame(t.segment(), b.take(DType.BF16, 6, 4).segment(), "another dtype: a new tensor");
        Tensor again = b.take(DType.F32, 4, 6);
        assertSame(t.segment(), again.segment(), "as many values: the same memory, in the new shape");
        assertArrayEquals(new long[]{4, 6}, again.shape());
        assertEquals(0, b.freeBytes());
    }
}
