package org.orbitrl.kernels;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;

/**
 * An n-dimensional array over a {@link MemorySegment}: dtype, shape, strides (in elements) and
 * an element offset. Views ({@link #reshape}, {@link #slice}, {@link #select}, {@link #transpose})
 * share the segment and never copy. Data is little-endian. Kernels take contiguous tensors;
 * {@link #contiguous} copies a strided view when one is needed.
 *
 * <p>Which memory a tensor lives in is the segment's business: host memory from an {@link Arena}
 * for the CPU backend; the CUDA backend wraps device pointers in a segment it never dereferences
 * on the host.
 */
public final class Tensor {
    static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;
    static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED;
    static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED;
    static final ValueLayout.OfLong I64 = ValueLayout.JAVA_LONG_UNALIGNED;

    private final MemorySegment segment;
    private final DType dtype;
    private final long[] shape;
    private final long[] strides;
    private final long offset;

    private Tensor(MemorySegment segment, DType dtype, long[] shape, long[] strides, long offset) {
        this.segment = segment;
        this.dtype = dtype;
        this.shape = shape;
        this.strides = strides;
        this.offset = offset;
    }

    /** A zero-filled contiguous tensor in {@code arena}. */
    public static Tensor allocate(Arena arena, DType dtype, long... shape) {
        long n = checkShape(shape);
        MemorySegment seg = arena.allocate(Math.max(1, n * dtype.bytes()), 64);
        return new Tensor(seg, dtype, shape.clone(), contiguousStrides(shape), 0);
    }

    /** A contiguous tensor over existing memory, which must hold at least numel*bytes. */
    public static Tensor wrap(MemorySegment segment, DType dtype, long... shape) {
        long n = checkShape(shape);
        if (segment.byteSize() < n * dtype.bytes()) {
            throw new IllegalArgumentException("segment of " + segment.byteSize() + " bytes is too small for "
                    + dtype + Arrays.toString(shape) + " (" + n * dtype.bytes() + " bytes)");
        }
        return new Tensor(segment, dtype, shape.clone(), contiguousStrides(shape), 0);
    }

    /** An f32 tensor holding a copy of {@code values}, shaped as given. */
    public static Tensor of(float[] values, long... shape) {
        if (checkShape(shape) != values.length) {
            throw new IllegalArgumentException(values.length + " values do not fill shape " + Arrays.toString(shape));
        }
        Tensor t = allocate(Arena.ofAuto(), DType.F32, shape);
        MemorySegment.copy(values, 0, t.segment, F32, 0, values.length);
        return t;
    }

    /** An i32 tensor holding a copy of {@code values}. */
    public static Tensor ofInts(int[] values, long... shape) {
        if (checkShape(shape) != values.length) {
            throw new IllegalArgumentException(values.length + " values do not fill shape " + Arrays.toString(shape));
        }
        Tensor t = allocate(Arena.ofAuto(), DType.I32, shape);
        MemorySegment.copy(values, 0, t.segment, I32, 0, values.length);
        return t;
    }

    private static long checkShape(long[] shape) {
        long n = 1;
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            }
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    static long[] contiguousStrides(long[] shape) {
        long[] s = new long[shape.length];
        long acc = 1;
        for (int i = shape.length - 1; i >= 0; i--) {
            s[i] = acc;
            acc *= shape[i];
        }
        return s;
    }

    // ---------------------------------------------------------------- shape

    public DType dtype() {
        return dtype;
    }

    public MemorySegment segment() {
        return segment;
    }

    /** Offset of element [0,...,0] in elements from the segment's start. */
    public long offset() {
        return offset;
    }

    /** Offset of element [0,...,0] in bytes from the segment's start. */
    public long byteOffset() {
        return offset * dtype.bytes();
    }

    public int rank() {
        return shape.length;
    }

    public long[] shape() {
        return shape.clone();
    }

    public long[] strides() {
        return strides.clone();
    }

    /** Size of dimension {@code d}; negative counts from the end. */
    public long dim(int d) {
        return shape[d < 0 ? shape.length + d : d];
    }

    /** Size of dimension {@code d} as an int, for loop bounds; throws if it does not fit. */
    public int size(int d) {
        return Math.toIntExact(dim(d));
    }

    public long numel() {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    public long byteSize() {
        return numel() * dtype.bytes();
    }

    public boolean isContiguous() {
        long acc = 1;
        for (int i = shape.length - 1; i >= 0; i--) {
            if (shape[i] != 1 && strides[i] != acc) {
                return false;
            }
            acc *= shape[i];
        }
        return true;
    }

    /** Throws unless contiguous; returns this. Kernels call it on their arguments. */
    public Tensor requireContiguous(String what) {
        if (!isContiguous()) {
            throw new IllegalArgumentException(what + " must be contiguous, got shape " + Arrays.toString(shape)
                    + " strides " + Arrays.toString(strides));
        }
        return this;
    }

    /** Throws unless dtype and shape are exactly as given ({@code -1} matches any size). */
    public Tensor expect(String what, DType dt, long... expected) {
        boolean ok = dt == null || dt == dtype;
        ok &= expected.length == shape.length;
        for (int i = 0; ok && i < expected.length; i++) {
            ok = expected[i] < 0 || expected[i] == shape[i];
        }
        if (!ok) {
            throw new IllegalArgumentException(what + ": expected " + (dt == null ? "" : dt) + Arrays.toString(expected)
                    + ", got " + this);
        }
        return this;
    }

    // ---------------------------------------------------------------- views

    /** Same data, new shape; one dimension may be -1. Requires a contiguous tensor. */
    public Tensor reshape(long... newShape) {
        requireContiguous("reshape source");
        long[] s = newShape.clone();
        int infer = -1;
        long known = 1;
        for (int i = 0; i < s.length; i++) {
            if (s[i] == -1) {
                if (infer >= 0) {
                    throw new IllegalArgumentException("two -1 dimensions in " + Arrays.toString(newShape));
                }
                infer = i;
            } else {
                known *= s[i];
            }
        }
        if (infer >= 0) {
            s[infer] = known == 0 ? 0 : numel() / known;
        }
        if (checkShape(s) != numel()) {
            throw new IllegalArgumentException("cannot reshape " + this + " to " + Arrays.toString(newShape));
        }
        return new Tensor(segment, dtype, s, contiguousStrides(s), offset);
    }

    /** Elements {@code [start, end)} along {@code dim}. */
    public Tensor slice(int dim, long start, long end) {
        int d = dim < 0 ? shape.length + dim : dim;
        if (start < 0 || end > shape[d] || start > end) {
            throw new IndexOutOfBoundsException("slice [" + start + "," + end + ") of dim " + d + " of " + this);
        }
        long[] s = shape.clone();
        s[d] = end - start;
        return new Tensor(segment, dtype, s, strides.clone(), offset + start * strides[d]);
    }

    /** Index {@code index} of dimension {@code dim}, which is removed. */
    public Tensor select(int dim, long index) {
        int d = dim < 0 ? shape.length + dim : dim;
        if (index < 0 || index >= shape[d]) {
            throw new IndexOutOfBoundsException("index " + index + " of dim " + d + " of " + this);
        }
        long[] s = new long[shape.length - 1];
        long[] st = new long[shape.length - 1];
        for (int i = 0, j = 0; i < shape.length; i++) {
            if (i != d) {
                s[j] = shape[i];
                st[j++] = strides[i];
            }
        }
        return new Tensor(segment, dtype, s, st, offset + index * strides[d]);
    }

    /** Swaps two dimensions (a strided view). */
    public Tensor transpose(int a, int b) {
        long[] s = shape.clone();
        long[] st = strides.clone();
        s[a] = shape[b];
        s[b] = shape[a];
        st[a] = strides[b];
        st[b] = strides[a];
        return new Tensor(segment, dtype, s, st, offset);
    }

    /** This tensor if contiguous, else a contiguous copy (same dtype) in an automatic arena. */
    public Tensor contiguous() {
        if (isContiguous()) {
            return this;
        }
        Tensor out = allocate(Arena.ofAuto(), dtype, shape);
        long n = numel();
        long[] idx = new long[shape.length];
        int b = dtype.bytes();
        for (long i = 0; i < n; i++) {
            MemorySegment.copy(segment, elementOffset(idx) * b, out.segment, i * b, b);
            increment(idx);
        }
        return out;
    }

    private long elementOffset(long[] idx) {
        long o = offset;
        for (int i = 0; i < idx.length; i++) {
            o += idx[i] * strides[i];
        }
        return o;
    }

    private void increment(long[] idx) {
        for (int i = idx.length - 1; i >= 0; i--) {
            if (++idx[i] < shape[i]) {
                return;
            }
            idx[i] = 0;
        }
    }

    // ---------------------------------------------------------------- element access (slow path)

    /** Element at a multi-index, converted to float. For tests and setup, not for kernels. */
    public float getFloat(long... index) {
        return readAsFloat(elementOffset(checkIndex(index)));
    }

    public void setFloat(float v, long... index) {
        writeFromFloat(elementOffset(checkIndex(index)), v);
    }

    public long getLong(long... index) {
        long o = elementOffset(checkIndex(index));
        return switch (dtype) {
            case I64 -> segment.get(I64, o * 8);
            case I32 -> segment.get(I32, o * 4);
            case I8 -> segment.get(ValueLayout.JAVA_BYTE, o);
            case U8 -> segment.get(ValueLayout.JAVA_BYTE, o) & 0xFF;
            default -> (long) readAsFloat(o);
        };
    }

    public void setLong(long v, long... index) {
        long o = elementOffset(checkIndex(index));
        switch (dtype) {
            case I64 -> segment.set(I64, o * 8, v);
            case I32 -> segment.set(I32, o * 4, Math.toIntExact(v));
            case I8, U8 -> segment.set(ValueLayout.JAVA_BYTE, o, (byte) v);
            default -> writeFromFloat(o, v);
        }
    }

    private long[] checkIndex(long[] index) {
        if (index.length != shape.length) {
            throw new IllegalArgumentException("index of rank " + index.length + " into " + this);
        }
        for (int i = 0; i < index.length; i++) {
            if (index[i] < 0 || index[i] >= shape[i]) {
                throw new IndexOutOfBoundsException("index " + Arrays.toString(index) + " out of " + this);
            }
        }
        return index;
    }

    private float readAsFloat(long elem) {
        return switch (dtype) {
            case F32 -> segment.get(F32, elem * 4);
            case BF16 -> Numerics.bf16ToFloat(segment.get(I16, elem * 2));
            case F16 -> Float.float16ToFloat(segment.get(I16, elem * 2));
            case F8E4M3 -> Numerics.e4m3ToFloat(segment.get(ValueLayout.JAVA_BYTE, elem));
            case I8 -> segment.get(ValueLayout.JAVA_BYTE, elem);
            case U8 -> segment.get(ValueLayout.JAVA_BYTE, elem) & 0xFF;
            case I32 -> segment.get(I32, elem * 4);
            case I64 -> segment.get(I64, elem * 8);
        };
    }

    private void writeFromFloat(long elem, float v) {
        switch (dtype) {
            case F32 -> segment.set(F32, elem * 4, v);
            case BF16 -> segment.set(I16, elem * 2, Numerics.floatToBf16(v));
            case F16 -> segment.set(I16, elem * 2, Float.floatToFloat16(v));
            case F8E4M3 -> segment.set(ValueLayout.JAVA_BYTE, elem, Numerics.floatToE4m3(v));
            case I8, U8 -> segment.set(ValueLayout.JAVA_BYTE, elem, (byte) Math.round(v));
            case I32 -> segment.set(I32, elem * 4, Math.round(v));
            case I64 -> segment.set(I64, elem * 8, (long) Math.rint(v));
        }
    }

    /** All elements, row-major, converted to float. */
    public float[] toFloatArray() {
        long n = numel();
        float[] out = new float[Math.toIntExact(n)];
        if (dtype == DType.F32 && isContiguous()) {
            MemorySegment.copy(segment, F32, offset * 4, out, 0, out.length);
            return out;
        }
        long[] idx = new long[shape.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = readAsFloat(elementOffset(idx));
            increment(idx);
        }
        return out;
    }

    /** All elements, row-major, as longs (integer dtypes). */
    public long[] toLongArray() {
        long[] out = new long[Math.toIntExact(numel())];
        long[] idx = new long[shape.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = getLong(idx);
            increment(idx);
        }
        return out;
    }

    /** All elements, row-major, as ints (integer dtypes; a value outside int's range throws ArithmeticException). */
    public int[] toIntArray() {
        long[] v = toLongArray();
        int[] out = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            out[i] = Math.toIntExact(v[i]);
        }
        return out;
    }

    /** Copies {@code src} (any dtype, same shape) into this tensor, converting through float. */
    public void copyFrom(Tensor src) {
        if (!Arrays.equals(shape, src.shape)) {
            throw new IllegalArgumentException("copy of " + src + " into " + this + ": shapes differ");
        }
        if (src.dtype == dtype && isContiguous() && src.isContiguous()) {
            MemorySegment.copy(src.segment, src.byteOffset(), segment, byteOffset(), byteSize());
            return;
        }
        int last = shape.length - 1;
        if (src.dtype == dtype && last >= 0 && strides[last] == 1 && src.strides[last] == 1) {
            copyRows(src, last);
            return;
        }
        long[] idx = new long[shape.length];
        long n = numel();
        boolean integral = !dtype.isFloatingPoint() && !src.dtype.isFloatingPoint();
        for (long i = 0; i < n; i++) {
            if (integral) {
                setLong(src.getLong(idx), idx);
            } else {
                setFloat(src.getFloat(idx), idx);
            }
            increment(idx);
        }
    }

    /** {@link #copyFrom} for views whose last dimension is contiguous on both sides: a row at a time. */
    private void copyRows(Tensor src, int last) {
        long cols = shape[last];
        if (cols == 0 || numel() == 0) {
            return;
        }
        int b = dtype.bytes();
        long rows = numel() / cols;
        long[] idx = new long[shape.length];   // idx[last] stays 0
        for (long r = 0; r < rows; r++) {
            MemorySegment.copy(src.segment, src.elementOffset(idx) * b, segment, elementOffset(idx) * b, cols * b);
            for (int i = last - 1; i >= 0; i--) {
                if (++idx[i] < shape[i]) {
                    break;
                }
                idx[i] = 0;
            }
        }
    }

    /** Converts to a new contiguous tensor of {@code target} dtype in an automatic arena. */
    public Tensor to(DType target) {
        Tensor out = allocate(Arena.ofAuto(), target, shape);
        out.copyFrom(this);
        return out;
    }

    /** Fills every element with {@code v}. */
    public Tensor fill(float v) {
        if (isContiguous() && (v == 0f && Float.floatToRawIntBits(v) == 0)) {
            segment.asSlice(byteOffset(), byteSize()).fill((byte) 0);
            return this;
        }
        if (isContiguous() && dtype == DType.F32) {
            long n = numel();
            for (long i = 0; i < n; i++) {
                segment.set(F32, (offset + i) * 4, v);
            }
            return this;
        }
        long[] idx = new long[shape.length];
        long n = numel();
        for (long i = 0; i < n; i++) {
            writeFromFloat(elementOffset(idx), v);
            increment(idx);
        }
        return this;
    }

    @Override
    public String toString() {
        return "Tensor" + dtype + Arrays.toString(shape);
    }
}
