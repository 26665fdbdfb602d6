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
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * The host tensors a model keeps for offloaded inputs: given back, the next take of at most as many values of the same
 * dtype from the same allocator reuses the smallest kept buffer that holds it (a view of its first values); a take no
 * kept buffer holds frees the outgrown ones of its allocator and dtype; a tensor given back twice, or never taken, is
 * refused; {@link HostBuffers#free} gives the kept ones back to the allocator that made each.
 */
class HostBuffersTest {
    /** A host allocator that records the pinned tensors it is asked to free. */
    private static final class Recording implements TensorAllocator {
        final List<Long> freed = new ArrayList<>();

        @Override
        public Tensor allocate(MemoryCategory category, DType dtype, long... shape) {
            return TensorAllocator.heap().allocate(category, dtype, shape);
        }

        @Override
        public void freePinnedHost(Tensor t) {
            freed.add(t.segment().address());
        }
    }

    private static long at(Tensor t) {
        return t.segment().address() + t.byteOffset();
    }

    @Test
    void keptBuffersServeTakesOfTheirAllocatorAndDtypeUpToTheirSize() {
        Recording a = new Recording();
        Recording other = new Recording();
        HostBuffers b = new HostBuffers();
        Tensor t = b.take(a, DType.F32, 6, 4);
        assertArrayEquals(new long[]{6, 4}, t.shape());
        t.fill(2.5f);
        Tensor second = b.take(a, DType.F32, 6, 4);
        assertNotEquals(at(t), at(second), "a tensor not given back is not handed out twice");
        b.give(t);
        assertEquals(96, b.freeBytes());
        assertNotEquals(at(t), at(b.take(a, DType.BF16, 6, 4)), "another dtype: a new tensor");
        assertNotEquals(at(t), at(b.take(other, DType.F32, 6, 4)), "another allocator: a new tensor");
        Tensor fewer = b.take(a, DType.F32, 5, 4);
        assertEquals(at(t), at(fewer), "fewer values: the kept buffer's first ones");
        assertArrayEquals(new long[]{5, 4}, fewer.shape());
        assertEquals(2.5f, fewer.toFloatArray()[19]);
        assertEquals(0, b.freeBytes());
        assertThrows(IllegalArgumentException.class, () -> b.give(t), "t was given back already (its memory is fewer's)");

        b.give(fewer);
        Tensor more = b.take(a, DType.F32, 10, 4);
        assertEquals(List.of(at(t)), a.freed, "outgrown: the kept buffer is freed, not kept beside the new one");
        assertNotEquals(at(t), at(more));
        b.give(more);
        b.give(second);
        assertThrows(IllegalArgumentException.class, () -> b.give(second), "given back twice");
        assertThrows(IllegalArgumentException.class, () -> b.give(Tensor.of(new float[4], 4)), "never taken");
        b.free();
        assertEquals(List.of(at(t), at(more), at(second)), a.freed, "free: the kept buffers back to their allocator");
        assertEquals(0, other.freed.size(), "nothing of the other allocator's was kept");
        assertEquals(0, b.freeBytes());
    }
}
