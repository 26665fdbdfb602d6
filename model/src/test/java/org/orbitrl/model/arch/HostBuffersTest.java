package org.orbitrl.model.arch;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * The host tensors a model keeps for offloaded inputs: given back, the next take of as many values from the same
 * allocator reuses the memory; {@link HostBuffers#free} gives the kept ones back to the allocator that made each.
 */
class HostBuffersTest {
    /** A host allocator that records the pinned tensors it is asked to free. */
    private static final class Recording implements TensorAllocator {
        final List<Tensor> freed = new ArrayList<>();

        @Override
        public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
            return TensorAllocator.heap().allocate(category, dtype, shape);
        }

        @Override
        public void freePinnedHost(Tensor t) {
            freed.add(t);
        }
    }

    @Test
    void aTensorGivenBackIsTakenAgainForTheSameSizeAndAllocatorOnly() {
        Recording a = new Recording();
        Recording other = new Recording();
        HostBuffers b = new HostBuffers();
        Tensor t = b.take(a, DType.F32, 6, 4);
        assertArrayEquals(new long[]{6, 4}, t.shape());
        t.fill(2.5f);
        Tensor second = b.take(a, DType.F32, 6, 4);
        assertNotSame(t.segment(), second.segment(), "a tensor not given back is not handed out twice");
        b.give(t);
        assertEquals(96, b.freeBytes());
        assertNotSame(t.segment(), b.take(a, DType.F32, 5, 4).segment(), "another size: a new tensor");
        assertNotSame(t.segment(), b.take(a, DType.BF16, 6, 4).segment(), "another dtype: a new tensor");
        assertNotSame(t.segment(), b.take(other, DType.F32, 6, 4).segment(), "another allocator: a new tensor");
        Tensor again = b.take(a, DType.F32, 4, 6);
        assertSame(t.segment(), again.segment(), "as many values: the same memory, in the new shape");
        assertArrayEquals(new long[]{4, 6}, again.shape());
        assertEquals(0, b.freeBytes());

        b.give(again);
        b.give(second);
        b.free();
        assertEquals(2, a.freed.size(), "the two kept tensors go back to their allocator");
        assertSame(again.segment(), a.freed.get(0).segment());
        assertSame(second.segment(), a.freed.get(1).segment());
        assertEquals(0, other.freed.size(), "nothing of the other allocator's was kept");
        assertEquals(0, b.freeBytes());
        assertThrows(IllegalArgumentException.class, () -> b.give(Tensor.of(new float[4], 4)),
                "a tensor these buffers did not hand out");
    }
}
