package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

import java.util.Arrays;

/**
 * Rows of one width that a sequence's decode state keeps from step to step: the window's latest K=V rows (at most
 * {@code keep}, the oldest dropped), a compressor's open window, its emitted entries. Where the backend keeps values
 * in device memory the rows live in one allocation of that memory with room to spare, and a step's new rows are copied
 * in behind the kept ones: no allocation, no copy of the rows already there. When the rows reach the allocation's end
 * they move to its front (a window: its allocation holds {@link #WINDOW_SLACK} rows beyond what it keeps, so the move
 * comes once every that many rows) or the allocation doubles (a store that keeps everything: the entries grow by one
 * row a window, so a long sequence copies each entry a handful of times, not once a window). On the host the rows are
 * an array.
 *
 * <p>{@link #value} gives the rows as a {@link Node} borrowed from the store (releasing it releases nothing), the same
 * node until the rows change; after a change it must not be read.
 */
final class StateRows {
    /** Rows of a window's allocation beyond the rows it keeps: the kept rows move to its front once every this many. */
    static final int WINDOW_SLACK = 32;

    private final int width;
    private final int keep;       // rows kept at most (the oldest dropped beyond); Integer.MAX_VALUE: every row
    private final int first;      // the first allocation's rows
    private final MemoryCategory category;
    private Tensor buf;           // device: [capacity, width]
    private TensorAllocator in;
    private float[] host;         // host: capacity * width
    private int start;            // the first kept row in the allocation
    private int rows;
    private Node value;           // the rows as a value, made at the first ask after a change

    /**
     * Rows of {@code width} values, at most {@code keep} of them (the oldest dropped), in allocations of {@code category}
     * of {@link #capacityFor} rows.
     */
    StateRows(int width, int keep, int first, MemoryCategory category) {
        if (width <= 0 || keep <= 0 || first <= 0) {
            throw new IllegalArgumentException("state rows of width " + width + ", keeping " + keep + ", first " + first);
        }
        this.width = width;
        this.keep = keep;
        this.first = first;
        this.category = category;
    }

    /** A window's rows: at most {@code keep}, in an allocation of {@code keep + WINDOW_SLACK}. */
    static StateRows window(int width, int keep, MemoryCategory category) {
        return new StateRows(width, keep, keep + WINDOW_SLACK, category);
    }

    /** Rows that are all kept, in a first allocation of {@code first} rows that doubles as they grow. */
    static StateRows growing(int width, int first, MemoryCategory category) {
        return new StateRows(width, Integer.MAX_VALUE, first, category);
    }

    /**
     * The rows of the allocation that holds {@code n} rows: {@code first} doubled until it does (so a store's memory
     * depends only on how many rows it holds, not on how they came: the memory planner counts it so).
     */
    static long capacityFor(int first, long n) {
        long c = first;
        while (c < n) {
            c *= 2;
        }
        return c;
    }

    int rows() {
        return rows;
    }

    int width() {
        return width;
    }

    /** Whether the rows live in a device allocator's memory. */
    boolean onDevice() {
        return buf != null && !in.hostMemory();
    }

    /** Floats of the kept rows. */
    long floats() {
        return (long) rows * width;
    }

    /**
     * Appends rows [from, from+count) of x [*, width] (each row {@code width} values), then drops the oldest rows beyond
     * what the store keeps. Where {@code b} keeps values in device memory the rows are copied there, else on the host.
     */
    void append(Backend b, Node x, int from, int count) {
        if (count <= 0) {
            return;
        }
        if (x.size() % width != 0 || from < 0 || (long) (from + count) * width > x.size()) {
            throw new IllegalArgumentException("rows [" + from + ", " + (from + count) + ") of a value of " + x.size()
                    + " elements in rows of " + width);
        }
        if (count > keep) {   // only the last kept rows of x remain
            from += count - keep;
            count = keep;
        }
        if (onDeviceFor(b)) {
            TensorAllocator a = b.allocator();
            Tensor dst = reserve(a, count);
            if (x.onDevice()) {
                Tensor src = x.placed(a, x.size() / width, width);
                a.copy(src.slice(0, from, from + count), dst);
            } else {   // values made on the host (pooled entries): only the new rows cross
                float[] v = x.v();
                a.copy(Tensor.of(Arrays.copyOfRange(v, from * width, (from + count) * width), count, width), dst);
            }
        } else {
            dropFor(count);
            appendOnHost(x, from, count);
            rows += count;
        }
        value = null;
    }

    /**
     * Appends row {@code rows[i]} of x [N, width] to {@code stores[i]} for every i (one row each, stores of one width):
     * where x is in {@code b}'s device memory and the stores live there, every row in one operation
     * ({@link Backend#copyRows}, one {@link Backend#copySpans}); otherwise one store at a time.
     */
    static void appendRows(Backend b, StateRows[] stores, Node x, int[] rows) {
        if (stores.length == 0) {
            return;
        }
        int width = stores[0].width;
        if (!Ops.there(b, x)) {
            for (int i = 0; i < stores.length; i++) {
                stores[i].append(b, x, rows[i], 1);
            }
            return;
        }
        TensorAllocator a = b.allocator();
        Tensor[] dsts = new Tensor[stores.length];
        int[] from = new int[stores.length];
        int n = 0;
        for (int i = 0; i < stores.length; i++) {
            StateRows s = stores[i];
            if (s.width != width) {
                throw new IllegalArgumentException("rows of " + s.width + " appended with rows of " + width);
            }
            if (!s.onDeviceFor(b)) {
                s.append(b, x, rows[i], 1);
                continue;
            }
            dsts[n] = s.reserve(a, 1);
            from[n++] = rows[i];
            s.value = null;
        }
        if (n > 0) {
            b.copyRows(x.placed(a, x.size() / width, width), Arrays.copyOf(from, n), Arrays.copyOf(dsts, n));
        }
    }

    /** Whether rows appended through {@code b} go to device memory (the store's, or the first allocation's). */
    private boolean onDeviceFor(Backend b) {
        return buf != null || (host == null && b != null && Ops.keepsValues(b));
    }

    /** Drops the oldest rows beyond what the store keeps once {@code count} more join. */
    private void dropFor(int count) {
        int drop = Math.max(0, rows + count - keep);
        start += drop;
        rows -= drop;
        if (rows == 0) {
            start = 0;
        }
    }

    /**
     * Makes room in the device allocation for {@code count} more rows (count at most what the store keeps) and returns
     * their place [count, width], counted as held: the oldest rows beyond the limit dropped, the kept ones moved to the
     * front or into a larger allocation where the end is reached.
     */
    private Tensor reserve(TensorAllocator a, int count) {
        dropFor(count);
        if (buf == null) {
            in = a;
            buf = a.allocate(category, DType.F32, capacityFor(first, count), width);
        } else if (a != in) {
            throw new IllegalStateException("a sequence's state rows in the memory of " + in + ", appended to through " + a);
        }
        int capacity = Math.toIntExact(buf.size(0));
        if (start + rows + count > capacity) {
            if (rows + count <= capacity) {   // to the front, in pieces of at most start rows: none overlaps its target
                for (int i = 0; i < rows; i += start) {
                    int c = Math.min(start, rows - i);
                    a.copy(buf.slice(0, start + i, start + i + c), buf.slice(0, i, i + c));
                }
            } else {
                Tensor grown = a.allocate(category, DType.F32, capacityFor(first, rows + count), width);
                if (rows > 0) {
                    a.copy(buf.slice(0, start, start + rows), grown.slice(0, 0, rows));
                }
                a.free(buf);
                buf = grown;
            }
            start = 0;
        }
        Tensor dst = buf.slice(0, start + rows, start + rows + count);
        rows += count;
        return dst;
    }

    private void appendOnHost(Node x, int from, int count) {
        int capacity = host == null ? 0 : host.length / width;
        if (start + rows + count > capacity) {
            float[] next = rows + count <= capacity ? host
                    : new float[Math.multiplyExact(Math.toIntExact(capacityFor(first, rows + count)), width)];
            if (rows > 0) {
                System.arraycopy(host, start * width, next, 0, rows * width);   // overlapping moves copy correctly
            }
            host = next;
            start = 0;
        }
        System.arraycopy(x.v(), from * width, host, (start + rows) * width, count * width);
    }

    /** Makes the first allocation now where {@code b} keeps values in device memory (nothing where it is made). */
    void allocateFirst(Backend b) {
        if (buf == null && host == null && b != null && Ops.keepsValues(b)) {
            in = b.allocator();
            buf = in.allocate(category, DType.F32, capacityFor(first, 0), width);
        }
    }

    /** Drops every row (the allocation stays for the next). */
    void clear() {
        start = 0;
        rows = 0;
        value = null;
    }

    /** Bytes of the store's device allocation (0 on the host or before the first row). */
    long deviceBytes() {
        return buf == null ? 0 : buf.byteSize();
    }

    /** Drops the oldest {@code n} rows (a compressor's pooled windows). */
    void dropOldest(int n) {
        if (n < 0 || n > rows) {
            throw new IllegalArgumentException("dropping " + n + " of " + rows + " rows");
        }
        start += n;
        rows -= n;
        if (rows == 0) {
            start = 0;
        }
        value = null;
    }

    /** The kept rows [rows, width] as a value borrowed from the store (null: none), the same node until they change. */
    Node value() {
        if (rows == 0) {
            return null;
        }
        if (value == null) {
            value = Scratch.unscoped(() -> buf != null ? Node.borrowed(in, buf.slice(0, start, start + rows))
                    : new Node(Arrays.copyOfRange(host, start * width, (start + rows) * width)));
        }
        return value;
    }

    /** The kept rows on the host (read back from the device where they live there). */
    float[] hostValues() {
        Node v = value();
        return v == null ? new float[0] : v.v();
    }

    /** A copy of the store (a fork's), its rows copied in {@code a}'s memory where they are in device memory. */
    StateRows copy(TensorAllocator a) {
        StateRows c = new StateRows(width, keep, first, category);
        c.rows = rows;
        if (buf != null) {
            c.in = a;
            c.buf = a.allocate(category, DType.F32, buf.size(0), width);
            if (rows > 0) {
                a.copy(buf.slice(0, start, start + rows), c.buf.slice(0, 0, rows));
            }
        } else if (host != null) {
            c.host = Arrays.copyOf(Arrays.copyOfRange(host, start * width, (start + rows) * width), host.length);
        }
        return c;
    }

    /** Releases the rows' memory (the store is empty afterwards). */
    void release(TensorAllocator a) {
        if (buf != null && a != null) {
            a.free(buf);
        }
        buf = null;
        in = null;
        host = null;
        start = 0;
        rows = 0;
        value = null;
    }
}
