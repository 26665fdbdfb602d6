package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.comm.Communicator;

import java.util.Arrays;

/**
 * The embedding table and the LM head split by vocabulary rows over the tensor-parallel group:
 * rank q holds rows {@code [q·V/tp, (q+1)·V/tp)}. A token's embedding comes from the one rank
 * that holds its row (the others contribute zeros to an all-reduce, so the sum is exact); logits
 * are computed per block and all-gathered; the head's input gradient is a partial sum per block,
 * all-reduced by the caller. Tensors live in the backend's memory (the token ids stay on the host,
 * where the rows of each block are chosen).
 */
final class VocabParallel {
    private VocabParallel() {
    }

    /** x [N, hidden] (overwritten) = the embeddings of {@code ids}, from this rank's block table [V/tp, hidden]. */
    static void embed(Backend b, Communicator tp, Tensor table, int[] ids, Tensor x) {
        TensorAllocator a = b.allocator();
        int rowsHere = table.size(0);
        int start = tp.rank() * rowsHere;
        int n = ids.length;
        int h = x.size(1);
        int[] local = new int[n];
        int[] rows = new int[n];
        int k = 0;
        for (int t = 0; t < n; t++) {
            if (ids[t] >= start && ids[t] < start + rowsHere) {
                local[k] = ids[t] - start;
                rows[k++] = t;
            } else if (ids[t] < 0 || ids[t] >= rowsHere * tp.size()) {
                throw new IndexOutOfBoundsException("token id " + ids[t] + " at position " + t + " is outside the vocabulary of "
                        + rowsHere * tp.size());
            }
        }
        a.zero(x);
        if (k > 0) {
            Tensor mine = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, k, h);   // [k, hidden]
            Tensor localIds = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(Arrays.copyOf(local, k), k));   // i32 [k]
            Tensor at = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(Arrays.copyOf(rows, k), k));          // i32 [k]
            b.embedding(table, localIds, mine);
            b.scatterAddRows(mine, at, null, x);
            a.release(localIds);
            a.release(at);
            a.release(mine);
        }
        tp.allReduceSum(x);
    }

    /** logits [N, V] (overwritten) from every rank's block [N, V/tp], blocks in rank order along the vocabulary. */
    static void gatherLogits(Backend b, Communicator tp, Tensor block, Tensor logits) {
        int n = block.size(0);
        int vs = block.size(1);
        int q = tp.size();
        Tensor all = b.allocator().allocate(MemoryCategory.LOGITS, DType.F32, (long) q * n, vs);   // [tp*N, V/tp]
        tp.allGather(block, all);
        b.copy(all.reshape(q, n, vs).transpose(0, 1), logits.reshape(n, q, vs));   // [tp, N, Vs] -> [N, tp, Vs]
        b.allocator().release(all);
    }

    /** This rank's block [N, V/tp] of dLogits [N, V], a new tensor of the backend's memory (the caller releases it). */
    static Tensor block(Backend b, Tensor full, Communicator tp, int vocabHere) {
        int q = tp.rank();
        Tensor out = b.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, full.size(0), vocabHere);   // [N, V/tp]
        b.copy(full.slice(1, (long) q * vocabHere, (long) (q + 1) * vocabHere), out);
        return out;
    }
}
