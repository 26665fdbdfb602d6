package org.orbitrl.kernels;

/**
 * The paged KV-cache operations of {@link Backend} built from its other operations: the defaults
 * of {@link Backend#pagedKvWrite} and {@link Backend#pagedDecodeAttention}. Decode attention
 * gathers each sequence's keys and values (or, for a latent cache, its keys alone, the values their leading channels)
 * into position order and runs {@link Backend#attention},
 * so it computes bit for bit what attention over a contiguous cache does. The tables are read on
 * the host: in place for host memory (these are then the host backend's kernels, and a captured
 * step may use them), else with a copy back from the device (not capturable).
 */
public final class PagedOps {
    private PagedOps() {
    }

    /** Row {@code slots[b]} of the caches gets k[b] and v[b]; a negative slot skips the sequence. */
    public static void kvWrite(Backend b, Tensor k, Tensor v, Tensor kCache, Tensor vCache, Tensor slots) {
        TensorAllocator a = b.allocator();
        Tensor s = a.hostMemory() ? slots : a.toHost(slots);
        int n = Math.toIntExact(slots.numel());
        if (k.dim(0) != n || (v == null) != (vCache == null) || (v != null && v.dim(0) != n)) {
            throw new IllegalArgumentException("pagedKvWrite: k " + k + " and v " + v + " must hold one row per slot (" + n + ")"
                    + ", v and its cache " + vCache + " both given or both null");
        }
        for (int i = 0; i < n; i++) {
            long row = s.getLong(i);
            if (row < 0) {
                continue;
            }
            a.copy(k.select(0, i).contiguous().reshape(kCache.dim(1)), kCache.select(0, row));   // host copies convert f32 to bf16
            if (v != null) {
                a.copy(v.select(0, i).contiguous().reshape(vCache.dim(1)), vCache.select(0, row));
            }
        }
    }

    /** Decode attention of q [B, Hq, D] over each sequence's paged keys; see {@link Backend#pagedDecodeAttention}. */
    public static void decodeAttention(Backend b, Tensor q, Tensor kCache, Tensor vCache, Tensor tables, Tensor lens,
                                       int blockSize, int kvHeads, Tensor out, AttentionSpec spec) {
        TensorAllocator a = b.allocator();
        Tensor t = a.hostMemory() ? tables : a.toHost(tables);
        Tensor l = a.hostMemory() ? lens : a.toHost(lens);
        int n = q.size(0);
        if (tables.rank() != 2 || tables.dim(0) != n || lens.numel() != n || out.dim(0) != n) {
            throw new IllegalArgumentException("pagedDecodeAttention: q " + q + ", tables " + tables + ", lens " + lens + ", out "
                    + out + " do not agree");
        }
        int d = Math.toIntExact(kCache.dim(1) / kvHeads);
        int dv = vCache == null ? out.size(2) : Math.toIntExact(vCache.dim(1) / kvHeads);
        if (dv > d && vCache == null) {
            throw new IllegalArgumentException("pagedDecodeAttention: values in the keys' leading channels need Dv <= D, got out "
                    + out + " over keys of " + d);
        }
        for (int i = 0; i < n; i++) {
            int len = (int) l.getLong(i);
            int[] rows = new int[len];
            for (int p = 0; p < len; p++) {
                rows[p] = (int) (t.getLong(i, p / blockSize) * blockSize + p % blockSize);
            }
            Tensor idx = Tensor.ofInts(rows, len);                                                 // i32 [len]
            idx = a.hostMemory() ? idx : a.upload(MemoryCategory.ACTIVATIONS, idx);
            Tensor k = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, len, (long) kvHeads * d);   // [len, Hkv*D]
            b.gatherRows(kCache, idx, k);
            Tensor k3 = k.reshape(len, kvHeads, d);
            Tensor v = null;                                                                         // [len, Hkv*Dv]
            if (vCache != null) {
                v = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, len, (long) kvHeads * dv);
                b.gatherRows(vCache, idx, v);
            }
            b.attention(q.slice(0, i, i + 1), k3, v == null ? k3.slice(2, 0, dv) : v.reshape(len, kvHeads, dv),
                    out.slice(0, i, i + 1), len - 1, spec);
            a.release(idx);
            a.release(k);
            if (v != null) {
                a.release(v);
            }
        }
    }
}
