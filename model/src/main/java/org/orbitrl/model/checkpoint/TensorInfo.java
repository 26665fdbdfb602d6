package org.orbitrl.model.checkpoint;

import java.util.Arrays;
import org.orbitrl.kernels.DType;

/**
 * One tensor's header entry in a safetensors file.
 *
 * @param name  tensor name
 * @param dtype element type
 * @param shape dimensions
 * @param begin first byte, relative to the start of the data area
 * @param end   one past the last byte, relative to the start of the data area
 */
public record TensorInfo(String name, DType dtype, long[] shape, long begin, long end) {

    public TensorInfo {
        shape = shape.clone();
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    /** Number of elements. */
    public long numel() {
        long n = 1;
        for (long d : shape) {
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    /** Bytes of data. */
    public long byteSize() {
        return end - begin;
    }

    /** {@code BF16[64, 32]}. */
    public String describe() {
        return dtype.safetensorsName() + Arrays.toString(shape);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof TensorInfo t && name.equals(t.name) && dtype == t.dtype && Arrays.equals(shape, t.shape)
                && begin == t.begin && end == t.end;
    }

    @Override
    public int hashCode() {
        return name.hashCode() * 31 + Arrays.hashCode(shape);
    }

    @Override
    public String toString() {
        return name + " " + describe() + " @[" + begin + ", " + end + ")";
    }
}
