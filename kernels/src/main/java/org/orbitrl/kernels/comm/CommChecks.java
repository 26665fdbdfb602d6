package org.orbitrl.kernels.comm;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.util.Arrays;

/** Argument checks shared by the implementations; each message names the collective and the sizes. */
final class CommChecks {
    private CommChecks() {
    }

    static void f32(String op, String what, Tensor t) {
        if (t.dtype() != DType.F32) {
            throw new IllegalArgumentException(op + ": " + what + " must be f32, got " + t);
        }
    }

    static void contiguous(String op, String what, Tensor t) {
        t.requireContiguous(op + " " + what);
    }

    /** Elements per row (everything after the first dimension); 1 for a 1-D tensor. */
    static long rowWidth(Tensor t) {
        long w = 1;
        for (int d = 1; d < t.rank(); d++) {
            w *= t.dim(d);
        }
        return w;
    }

    static long rows(Tensor t) {
        return t.rank() == 0 ? 1 : t.dim(0);
    }

    static void counts(String op, int size, long[] sendCounts, long[] recvCounts, Tensor send, Tensor recv) {
        if (sendCounts.length != size || recvCounts.length != size) {
            throw new IllegalArgumentException(op + ": " + size + " ranks but " + sendCounts.length + " send counts and "
                    + recvCounts.length + " receive counts");
        }
        long s = Arrays.stream(sendCounts).sum();
        long r = Arrays.stream(recvCounts).sum();
        if (Arrays.stream(sendCounts).anyMatch(c -> c < 0) || Arrays.stream(recvCounts).anyMatch(c -> c < 0)) {
            throw new IllegalArgumentException(op + ": negative count in send " + Arrays.toString(sendCounts)
                    + " / receive " + Arrays.toString(recvCounts));
        }
        if (s > rows(send) || r > rows(recv)) {
            throw new IllegalArgumentException(op + ": counts send " + Arrays.toString(sendCounts) + " (" + s
                    + " rows) / receive " + Arrays.toString(recvCounts) + " (" + r + " rows) exceed buffers " + send
                    + " / " + recv);
        }
        if (s > 0 && r > 0 && (rowWidth(send) != rowWidth(recv) || send.dtype() != recv.dtype())) {
            throw new IllegalArgumentException(op + ": send rows " + send + " and receive rows " + recv
                    + " differ in width or dtype");
        }
    }
}
