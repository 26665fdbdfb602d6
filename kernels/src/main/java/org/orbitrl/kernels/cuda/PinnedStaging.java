package org.orbitrl.kernels.cuda;

import org.bytedeco.javacpp.Pointer;
import org.orbitrl.kernels.cuda.internal.DevicePointer;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.stream.IntStream;

import static org.bytedeco.cuda.global.cudart.*;

/**
 * Page-locked host memory through which a Java float array (or a large tensor of host memory) goes to a device tensor
 * and back: the array is copied into
 * it and the DMA engine reads it at the link's speed, where a pageable source would be zero-filled into a native
 * tensor, copied, then staged again by the driver. The buffer is two halves used in turn: a transfer goes in pieces of
 * a half, the host copying one piece (on several threads, {@link #SLICE} bytes each) while the engine moves the other,
 * an event a half saying when it is free again. An upload returns once the array is copied out (its last pieces may
 * still be in flight, ordered before later work on the stream); a download returns once every piece is in the array.
 * At most {@link #MAX_BYTES} are allocated, on the first transfer (as large as that transfer up to the maximum), and
 * kept. One thread drives it at a time.
 */
final class PinnedStaging implements AutoCloseable {
    /** Largest staging buffer: 64 MiB, two halves of 32 MiB. */
    static final long MAX_BYTES = 64L << 20;
    /** Bytes one thread copies between the array and the buffer at a time. */
    static final long SLICE = 4L << 20;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private final CudaStream stream;
    private final CudaEvent[] done = new CudaEvent[2];   // recorded after each half's last copy
    private final boolean[] inFlight = new boolean[2];
    private long address;
    private long half;          // bytes a half, a multiple of 4 KiB
    private MemorySegment host;
    private int next;           // the half an upload takes next

    PinnedStaging(CudaStream stream) {
        this.stream = stream;
    }

    /** values[from, from + n) into the device at {@code dst}, issued on the stream; the array may be reused on return. */
    void upload(float[] values, int from, int n, long dst) {
        upload((long) n * Float.BYTES, dst, (at, off, piece) -> copyIn(values, from + (int) (off / Float.BYTES), at, piece));
    }

    /** The {@code src.byteSize()} bytes of host memory {@code src} into the device at {@code dst}, as the array form. */
    void upload(MemorySegment src, long dst) {
        upload(src.byteSize(), dst, (at, off, piece) -> copyIn(src, off, at, piece));
    }

    /** Fills the buffer at {@code at} with {@code bytes} of the source from its byte {@code off}. */
    private interface Fill {
        void fill(long at, long off, long bytes);
    }

    private void upload(long total, long dst, Fill in) {
        ensure(total);
        for (long off = 0; off < total; ) {
            long piece = Math.min(half, total - off);
            int s = next;
            next ^= 1;
            awaitHalf(s);
            in.fill(s * half, off, piece);
            CudaCheck.check(cudaMemcpyAsync(new DevicePointer(dst + off), new DevicePointer(address + s * half), piece,
                    cudaMemcpyHostToDevice, stream.handle()), "cudaMemcpyAsync host->device (pinned)", piece + " bytes");
            done[s].record(stream);
            inFlight[s] = true;
            off += piece;
        }
    }

    /** n floats at device address {@code src} into out[0, n), after the stream's work. */
    void download(long src, float[] out, int n) {
        download(src, (long) n * Float.BYTES, (at, off, piece) -> copyOut(at, out, (int) (off / Float.BYTES), piece));
    }

    /** {@code out.byteSize()} bytes at device address {@code src} into host memory {@code out}, after the stream's work. */
    void download(long src, MemorySegment out) {
        download(src, out.byteSize(), (at, off, piece) -> copyOut(at, out, off, piece));
    }

    private void download(long src, long total, Fill out) {
        ensure(total);
        awaitHalf(0);
        awaitHalf(1);
        long pieces = (total + half - 1) / half;
        long issued = 0;
        for (long p = 0; p < pieces; p++) {
            while (issued < pieces && issued < p + 2) {   // keep the engine one piece ahead of the host's copy
                int s = (int) (issued & 1);
                long off = issued * half;
                long piece = Math.min(half, total - off);
                CudaCheck.check(cudaMemcpyAsync(new DevicePointer(address + s * half), new DevicePointer(src + off), piece,
                        cudaMemcpyDeviceToHost, stream.handle()), "cudaMemcpyAsync device->host (pinned)", piece + " bytes");
                done[s].record(stream);
                issued++;
            }
            int s = (int) (p & 1);
            long off = p * half;
            done[s].synchronize();
            out.fill(s * half, off, Math.min(half, total - off));
        }
        next = 0;
    }

    private void awaitHalf(int s) {
        if (inFlight[s]) {
            done[s].synchronize();
            inFlight[s] = false;
        }
    }

    /** bytes of v from float {@code from} into the buffer at {@code at}, a slice a thread. */
    private void copyIn(float[] v, int from, long at, long bytes) {
        int slices = (int) ((bytes + SLICE - 1) / SLICE);
        IntStream range = IntStream.range(0, slices);
        (slices > 1 ? range.parallel() : range).forEach(i -> {
            long o = i * SLICE;
            long len = Math.min(SLICE, bytes - o);
            MemorySegment.copy(v, from + (int) (o / Float.BYTES), host, F32, at + o, (int) (len / Float.BYTES));
        });
    }

    /** bytes of src from its byte {@code from} into the buffer at {@code at}, a slice a thread. */
    private void copyIn(MemorySegment src, long from, long at, long bytes) {
        int slices = (int) ((bytes + SLICE - 1) / SLICE);
        IntStream range = IntStream.range(0, slices);
        (slices > 1 ? range.parallel() : range).forEach(i -> {
            long o = i * SLICE;
            MemorySegment.copy(src, from + o, host, at + o, Math.min(SLICE, bytes - o));
        });
    }

    /** bytes of the buffer at {@code at} into out from its byte {@code to}, a slice a thread. */
    private void copyOut(long at, MemorySegment out, long to, long bytes) {
        int slices = (int) ((bytes + SLICE - 1) / SLICE);
        IntStream range = IntStream.range(0, slices);
        (slices > 1 ? range.parallel() : range).forEach(i -> {
            long o = i * SLICE;
            MemorySegment.copy(host, at + o, out, to + o, Math.min(SLICE, bytes - o));
        });
    }

    /** bytes of the buffer at {@code at} into out from float {@code to}, a slice a thread. */
    private void copyOut(long at, float[] out, int to, long bytes) {
        int slices = (int) ((bytes + SLICE - 1) / SLICE);
        IntStream range = IntStream.range(0, slices);
        (slices > 1 ? range.parallel() : range).forEach(i -> {
            long o = i * SLICE;
            long len = Math.min(SLICE, bytes - o);
            MemorySegment.copy(host, F32, at + o, out, to + (int) (o / Float.BYTES), (int) (len / Float.BYTES));
        });
    }

    /** The buffer, allocated (or grown, up to the maximum) for a transfer of {@code want} bytes. */
    private void ensure(long want) {
        long size = Math.min(MAX_BYTES, Math.max(want, 1L << 20));
        long h = (size / 2 + 4095) / 4096 * 4096;
        if (h > half) {
            free();
            Pointer p = new Pointer();
            CudaCheck.check(cudaMallocHost(p, 2 * h), "cudaMallocHost", 2 * h + " bytes of pinned staging");
            address = p.address();
            half = h;
            host = MemorySegment.ofAddress(address).reinterpret(2 * h);
            for (int i = 0; i < 2; i++) {
                if (done[i] == null) {
                    done[i] = new CudaEvent();
                }
            }
        }
    }

    private void free() {
        if (address != 0) {
            awaitHalf(0);
            awaitHalf(1);
            CudaCheck.check(cudaFreeHost(new DevicePointer(address)), "cudaFreeHost", 2 * half + " bytes of pinned staging");
            address = 0;
            half = 0;
            host = null;
        }
    }

    @Override
    public void close() {
        free();
        for (int i = 0; i < 2; i++) {
            if (done[i] != null) {
                done[i].close();
                done[i] = null;
            }
        }
    }
}
