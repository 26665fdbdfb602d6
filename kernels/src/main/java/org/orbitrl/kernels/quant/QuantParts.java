package org.orbitrl.kernels.quant;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Numerics;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.Arrays;

/** Shape checks, row reads and allocation shared by the format classes. */
final class QuantParts {
    private QuantParts() {
    }

    static final ValueLayout.OfInt I32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfShort I16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /**
     * Throws unless {@code t} is contiguous with dtype {@code dt} and one of the given shapes.
     * The message names the format, the tensor's checkpoint name and the weight shape.
     */
    static void expect(String format, String tensor, long rows, long cols, Tensor t, DType dt, long[]... shapes) {
        boolean shapeOk = false;
        for (long[] s : shapes) {
            shapeOk |= Arrays.equals(s, t.shape());
        }
        if (t.dtype() != dt || !shapeOk) {
            StringBuilder want = new StringBuilder();
            for (long[] s : shapes) {
                want.append(want.isEmpty() ? "" : " or ").append(dt).append(Arrays.toString(s));
            }
            throw new IllegalArgumentException(format + ": " + tensor + " of a [" + rows + ", " + cols + "] weight must be "
                    + want + ", got " + t);
        }
        if (!t.isContiguous()) {
            throw new IllegalArgumentException(format + ": " + tensor + " must be contiguous, got shape "
                    + Arrays.toString(t.shape()) + " strides " + Arrays.toString(t.strides()));
        }
    }

    /** Throws unless {@code cols} is a multiple of the format's group size. */
    static void requireGroups(String format, long rows, long cols, int group) {
        if (cols % group != 0) {
            throw new IllegalArgumentException(format + " needs the column count (K) to be a multiple of its group size "
                    + group + ", got a [" + rows + ", " + cols + "] weight");
        }
    }

    static void requireNull(String format, String what, Tensor t) {
        if (t != null) {
            throw new IllegalArgumentException(format + " has no " + what + ", got " + t);
        }
    }

    static void requireGlobalScaleOne(String format, float globalScale) {
        if (globalScale != 1f) {
            throw new IllegalArgumentException(format + " has no global scale; it must be 1, got " + globalScale);
        }
    }

    /** The [rows, cols] shape of a matrix to quantize; throws unless it is a rank-2 float tensor. */
    static int[] matrixShape(String format, Tensor w) {
        if (w.rank() != 2 || !w.dtype().isFloatingPoint()) {
            throw new IllegalArgumentException(format + " quantize: the weight must be a [rows, cols] f32 or bf16 matrix, got "
                    + w);
        }
        return new int[]{w.size(0), w.size(1)};
    }

    /** Row {@code r} of a [rows, cols] float matrix, as f32. */
    static void readRow(Tensor w, int r, float[] out) {
        int cols = w.size(1);
        Tensor row = w.select(0, r);
        if (row.isContiguous() && w.dtype() == DType.F32) {
            MemorySegment.copy(row.segment(), F32, row.byteOffset(), out, 0, cols);
        } else if (row.isContiguous() && w.dtype() == DType.BF16) {
            MemorySegment seg = row.segment();
            long o = row.byteOffset();
            for (int c = 0; c < cols; c++) {
                out[c] = Numerics.bf16ToFloat(seg.get(I16, o + 2L * c));
            }
        } else {
            for (int c = 0; c < cols; c++) {
                out[c] = row.getFloat(c);
            }
        }
    }

    /** Throws unless every value is finite; names the format and position. */
    static void requireFinite(String format, float[] row, int r, int cols) {
        for (int c = 0; c < cols; c++) {
            if (!Float.isFinite(row[c])) {
                throw new IllegalArgumentException(format + " quantize: weight[" + r + ", " + c + "] is " + row[c]);
            }
        }
    }

    /** Largest |v| over {@code v[from, to)}. */
    static float absMax(float[] v, int from, int to) {
        float m = 0;
        for (int i = from; i < to; i++) {
            m = Math.max(m, Math.abs(v[i]));
        }
        return m;
    }

    /** A zero-filled tensor in a GC-managed arena (quantizer outputs live as long as they are referenced). */
    static Tensor allocate(DType dt, long... shape) {
        return Tensor.allocate(Arena.ofAuto(), dt, shape);
    }

    /** The smallest bf16 value {@code >= v} (v finite and {@code >= 0}). */
    static float bf16AtLeast(float v) {
        float r = Numerics.roundBf16(v);
        if (r < v) {
            r = Numerics.bf16ToFloat((short) (Numerics.floatToBf16(r) + 1));
        }
        return r;
    }
}
