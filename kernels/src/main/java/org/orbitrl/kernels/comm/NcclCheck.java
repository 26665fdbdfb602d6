package org.orbitrl.kernels.comm;

import org.bytedeco.cuda.global.nccl;
import org.bytedeco.cuda.nccl.ncclComm;
import org.bytedeco.javacpp.BytePointer;

import java.util.Arrays;

/**
 * The check every NCCL call goes through: a status other than {@code ncclSuccess} becomes an
 * {@link IllegalStateException} naming the operation, its sizes, NCCL's error string and, when a
 * communicator is known, NCCL's last error message for it.
 */
final class NcclCheck {
    private NcclCheck() {
    }

    static void check(int status, String op, ncclComm comm, Object... sizes) {
        if (status == nccl.ncclSuccess) {
            return;
        }
        StringBuilder sb = new StringBuilder("NCCL ").append(op).append(" failed: ")
                .append(string(nccl.ncclGetErrorString(status))).append(" (code ").append(status).append(')');
        if (comm != null) {
            sb.append("; last error: ").append(string(nccl.ncclGetLastError(comm)));
        }
        if (sizes.length > 0) {
            sb.append("; arguments: ");
            for (int i = 0; i < sizes.length; i++) {
                Object s = sizes[i];
                sb.append(i > 0 ? ", " : "").append(s instanceof long[] a ? Arrays.toString(a) : String.valueOf(s));
            }
        }
        sb.append(" (hints: NCCL_DEBUG=WARN for details; NCCL_NVLS_ENABLE=0 on machines without NVLink multicast)");
        throw new IllegalStateException(sb.toString());
    }

    private static String string(BytePointer p) {
        return p == null || p.isNull() ? "(no message)" : p.getString();
    }
}
