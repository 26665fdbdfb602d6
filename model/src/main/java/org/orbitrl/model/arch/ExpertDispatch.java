package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.comm.Communicator;

import java.util.Arrays;

/**
 * A sparse MoE block under expert parallelism. Every rank of the expert-parallel group sees all N
 * tokens; rank p routes its slice {@code [N·p/M, N·(p+1)/M)}, sends each (token, expert) pair's
 * input row to the rank that owns the expert (experts are split into M contiguous blocks), the
 * owners run their experts on what they received and send the unweighted outputs back, the
 * source combines them with the routing weights, and an all-gather puts the slices back together.
 * Backward retraces the same path: output gradients to the owners, input gradients back, then the
 * router's gradient on each slice.
 *
 * <p>Rows travel grouped by expert (ascending) and, within an expert, by token; owners see each
 * expert's rows in global token order. Each token's expert outputs are therefore added in
 * ascending expert order and each expert's LoRA gradient sums its tokens in ascending order,
 * exactly as on one rank.
 *
 * <p>An owner runs the experts it holds grouped ({@link GroupedExperts}: its received rows with their expert as a
 * choice of one at weight 1, the same kernels as one GPU's grouped block) where {@link ExpertParallelBlock#owned} allows, else one
 * expert at a time.
 *
 * <p>The block runs wherever the backend computes: the exchanged rows, expert ids and index tensors
 * live in the backend's memory (device memory for a GPU rank, what NCCL moves); the routing
 * decision and the per-row bookkeeping are taken on the host, as in the blocks' per-expert forms.
 *
 * <p>A block with shared experts (DeepSeek-V3) hands their output as {@code base} (added to the routed sum) and their
 * input gradient as {@code dBase} (where the routed and router gradients accumulate): the orders of one GPU's block.
 */
final class ExpertDispatch {
    private ExpertDispatch() {
    }

    /** What backward needs, on both the source and the owner side. */
    static final class Tape {
        int lo;                       // this rank's token slice [lo, hi)
        int hi;
        Tensor xs;                    // [n, hidden] the slice's input (a view)
        ExpertRouter.Routed routed;   // the router's choice over the slice, in backend memory (null: an empty slice)
        int[] sendSlot;               // [S] the token-major routing slot of each row sent (rows grouped by expert)
        long[] sendCounts;            // [M] rows sent to each rank
        long[] recvCounts;            // [M] rows received from each rank
        Tensor y;                     // [S, hidden] unweighted expert outputs, back from the owners
        ExpertGroups recvGroups;      // rows received, grouped by expert (owner side)
        DenseMlp.Tape[] expertTapes;  // [E] owner side, null for experts without rows here
        GroupedExperts owned;         // owner side, grouped: the experts held here (null: one at a time)
        GroupedExperts.Tape ownedTape;
        Tensor ownedOnes;             // [R, 1] the received rows' weights (1), for the grouped backward

        /** Releases what the forward kept for a backward that will not run (a tape dropped after its forward). */
        void release(TensorAllocator a) {
            if (y != null) {
                a.release(y);
            }
            if (routed != null) {
                routed.release(a);
            }
            if (ownedTape != null) {
                ownedTape.release(a);
            }
            if (ownedOnes != null) {
                a.release(ownedOnes);
            }
            DenseMlp.releaseExperts(a, expertTapes, null);
            y = null;
            routed = null;
            ownedTape = null;
            ownedOnes = null;
            expertTapes = null;
        }
    }

    private static int sliceStart(int n, int rank, int ranks) {
        return (int) ((long) n * rank / ranks);
    }

    /**
     * x [N, hidden] -> out [N, hidden] (overwritten). {@code training}: a forward of a training step, with or without a
     * tape (a recomputed layer's two forwards compute the same).
     */
    static void forward(ExpertParallelBlock moe, Backend b, Communicator ep, Tensor x, Tensor out, Tape tape, boolean training) {
        forward(moe, b, ep, x, null, out, tape, training);
    }

    /** As above, out = base [N, hidden] (the shared experts' output; null: zero) + the routed experts' weighted outputs. */
    static void forward(ExpertParallelBlock moe, Backend b, Communicator ep, Tensor x, Tensor base, Tensor out, Tape tape,
                        boolean training) {
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        int h = x.size(1);
        int m = ep.size();
        int experts = moe.experts().length;
        int perRank = experts / m;
        int lo = sliceStart(n, ep.rank(), m);
        int hi = sliceStart(n, ep.rank() + 1, m);
        int ns = hi - lo;
        Tensor xs = x.slice(0, lo, hi);                                                     // [n, hidden]
        int topK = moe.router().topK();
        // the choice on the backend, as one GPU's grouped block takes it; its ids read to the host for the bookkeeping
        ExpertRouter.Routed routed = ns == 0 ? null : moe.router().route(b, xs);
        int[] choice = new int[ns * topK];
        if (routed != null) {
            long[] chosen = a.toHost(routed.ids()).toLongArray();
            for (int i = 0; i < choice.length; i++) {
                choice[i] = (int) chosen[i];
            }
        }
        ExpertGroups g = ExpertGroups.of(choice, new float[choice.length], topK, experts);
        int s = choice.length;
        int[] sendToken = new int[s];
        int[] sendSlot = new int[s];
        int[] sendExpert = new int[s];
        long[] sendCounts = new long[m];
        int k = 0;
        for (int e = 0; e < experts; e++) {
            int[] tok = g.tokenArray(e);
            for (int i = 0; i < tok.length; i++, k++) {
                sendToken[k] = tok[i];
                sendSlot[k] = g.slot(e, i);
                sendExpert[k] = e;
                sendCounts[e / perRank]++;
            }
        }
        Tensor sendX = a.allocate(MemoryCategory.COMM_BUFFERS, DType.F32, s, h);           // [S, hidden]
        Tensor sendTok = upload(a, sendToken);                                              // i32 [S]
        if (s > 0) {
            b.gatherRows(xs, sendTok, sendX);
        }
        // every rank's rows per expert (and its token count, which must be everyone's): one all-gather, one host read;
        // a rank's rows arrive grouped by expert in ascending order, so the counts say which expert each row is for
        long[] all = gatherExpertCounts(a, ep, sendExpert, experts, n);
        int mine = ep.rank() * perRank;
        long[] recvCounts = new long[m];
        for (int q = 0; q < m; q++) {
            for (int e = mine; e < mine + perRank; e++) {
                recvCounts[q] += all[q * (experts + 1) + e];
            }
        }
        int rows = Math.toIntExact(Arrays.stream(recvCounts).sum());
        Tensor recvX = a.allocate(MemoryCategory.COMM_BUFFERS, DType.F32, rows, h);         // [R, hidden]
        ep.allToAll(sendX, sendCounts, recvX, recvCounts);
        a.release(sendX);
        int[] recvExpert = new int[rows];
        float[] ones = new float[rows];
        int at = 0;
        for (int q = 0; q < m; q++) {
            for (int e = mine; e < mine + perRank; e++) {
                for (long c = all[q * (experts + 1) + e]; c > 0; c--) {
                    recvExpert[at] = e;
                    ones[at++] = 1;
                }
            }
        }
        // owner side: run this rank's experts on the rows it received
        ExpertGroups rg = ExpertGroups.of(recvExpert, ones, 1, experts);
        Tensor recvY = a.allocate(MemoryCategory.COMM_BUFFERS, DType.F32, rows, h);         // [R, hidden]
        DenseMlp.Tape[] tapes = new DenseMlp.Tape[experts];
        GroupedExperts owned = rows == 0 ? null : moe.owned(b);
        GroupedExperts.Tape ownedTape = null;
        Tensor onesDev = null;
        if (owned != null) {
            int[] local = new int[rows];
            for (int i = 0; i < rows; i++) {
                local[i] = recvExpert[i] - moe.ownedFirst();
                held(moe, recvExpert[i], ep);
            }
            Tensor localIds = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(local, rows, 1));        // i32 [R, 1]
            onesDev = a.uploadFloats(MemoryCategory.ACTIVATIONS, ones, rows, 1);                           // [R, 1]
            ownedTape = tape == null ? null : new GroupedExperts.Tape();
            owned.forward(b, recvX, localIds, onesDev, recvY, ownedTape, moe.chunkSize(), training || tape != null, false);
            a.release(localIds);
            if (tape == null) {
                a.release(onesDev);
                onesDev = null;
            }
        }
        moe.eachActive(b, owned != null ? ExpertGroups.of(new int[0], new float[0], 1, experts) : rg, (e, dense) -> {
            DenseMlp expert = held(moe, e, ep);
            int cnt = rg.count(e);
            Tensor idx = a.upload(MemoryCategory.ACTIVATIONS, rg.tokens(e));                  // i32 [cnt]
            Tensor xe = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);            // [cnt, hidden]
            Tensor ye = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);            // [cnt, hidden]
            b.gatherRows(recvX, idx, xe);
            DenseMlp.Tape et = tape == null ? null : new DenseMlp.Tape();
            expert.forward(b, xe, ye, et, dense);
            b.scatterAddRows(ye, idx, null, recvY);
            a.release(idx);
            a.release(ye);
            if (et == null) {
                a.release(xe);   // a tape keeps the expert's input for its backward
            }
            tapes[e] = et;
        });
        a.release(recvX);
        Tensor y = a.allocate(MemoryCategory.COMM_BUFFERS, DType.F32, s, h);               // [S, hidden]
        ep.allToAll(recvY, recvCounts, y, sendCounts);
        a.release(recvY);
        // source side: each token's weighted sum over its choices in their order (one GPU's grouped combination)
        Tensor outS = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, ns, h);             // [n, hidden]
        if (s > 0) {
            Tensor pos = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(slotRows(sendSlot), s));   // i32 [S]
            b.moeCombineGrouped(y, pos, routed.weights(), outS, false);
            a.release(pos);
        }
        a.release(sendTok);
        gatherSlices(b, ep, outS, out);
        a.release(outS);
        if (base != null) {
            b.add(out, base, out);   // the routed sum, then the shared output: one GPU's block adds them so
        }
        if (tape == null) {
            a.release(y);
            if (routed != null) {
                routed.release(a);
            }
        }
        if (tape != null) {
            tape.lo = lo;
            tape.hi = hi;
            tape.xs = xs;
            tape.routed = routed;
            tape.sendSlot = sendSlot;
            tape.sendCounts = sendCounts;
            tape.recvCounts = recvCounts;
            tape.y = y;
            tape.recvGroups = rg;
            tape.expertTapes = tapes;
            tape.owned = owned;
            tape.ownedTape = ownedTape;
            tape.ownedOnes = onesDev;
        }
    }

    /** dout [N, hidden] -> dx [N, hidden] (overwritten); expert adapters on the owners accumulate their gradients. */
    static void backward(ExpertParallelBlock moe, Backend b, Communicator ep, Tape t, Tensor dout, Tensor dx) {
        backward(moe, b, ep, t, dout, null, dx);
    }

    /** As above, dx = dBase [N, hidden] (the shared experts' input gradient; null: zero) + the routed experts' and router's. */
    static void backward(ExpertParallelBlock moe, Backend b, Communicator ep, Tape t, Tensor dout, Tensor dBase, Tensor dx) {
        TensorAllocator a = b.allocator();
        int h = dout.size(1);
        int ns = t.hi - t.lo;
        int s = t.sendSlot.length;
        int topK = moe.router().topK();
        // on the backend, as one GPU's grouped block: the routing weights' gradient ⟨dout, y⟩ per routed pair, and each
        // row's output gradient w · dout[token]
        Tensor doutS = dout.slice(0, t.lo, t.hi);                                               // [n, hidden]
        Tensor dWeight = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, ns, topK);          // [n, k]
        Tensor sendDy = a.allocate(MemoryCategory.COMM_BUFFERS, DType.F32, s, h);              // [S, hidden]
        if (s > 0) {
            Tensor pos = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(slotRows(t.sendSlot), s));   // i32 [S]
            Tensor order = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(t.sendSlot, s));           // i32 [S]
            b.moeWeightGrad(doutS, t.y, pos, dWeight);
            b.moeGather(doutS, order, topK, t.routed.weights(), sendDy);
            a.release(pos);
            a.release(order);
        }
        a.release(t.y);
        t.y = null;
        int rows = Math.toIntExact(Arrays.stream(t.recvCounts).sum());
        Tensor recvDy = a.allocate(MemoryCategory.COMM_BUFFERS, DType.F32, rows, h);        // [R, hidden]
        ep.allToAll(sendDy, t.sendCounts, recvDy, t.recvCounts);
        a.release(sendDy);
        Tensor recvDx = a.allocate(MemoryCategory.COMM_BUFFERS, DType.F32, rows, h);        // [R, hidden]
        ExpertGroups groups = t.owned != null ? ExpertGroups.of(new int[0], new float[0], 1, moe.experts().length) : t.recvGroups;
        if (t.owned != null) {
            Tensor dWeight1 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, rows, 1);                 // [R, 1] unused
            t.owned.backward(b, t.ownedTape, t.ownedOnes, recvDy, recvDx, dWeight1, moe.chunkSize(), false);
            a.release(dWeight1);
            t.ownedTape.release(a);
            a.release(t.ownedOnes);
            t.owned = null;
            t.ownedTape = null;
            t.ownedOnes = null;
        }
        moe.eachActive(b, groups, (e, dense) -> {
            DenseMlp expert = held(moe, e, ep);
            int cnt = groups.count(e);
            Tensor idx = a.upload(MemoryCategory.ACTIVATIONS, groups.tokens(e));              // i32 [cnt]
            Tensor dye = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);           // [cnt, hidden]
            Tensor dxe = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, cnt, h);           // [cnt, hidden]
            b.gatherRows(recvDy, idx, dye);
            expert.backward(b, t.expertTapes[e], dye, dxe, dense);
            b.scatterAddRows(dxe, idx, null, recvDx);
            a.release(idx);
            a.release(dye);
            a.release(dxe);
        });
        a.release(recvDy);
        DenseMlp.releaseExperts(a, t.expertTapes, null);
        t.expertTapes = null;
        Tensor dxRows = a.allocate(MemoryCategory.COMM_BUFFERS, DType.F32, s, h);          // [S, hidden]
        ep.allToAll(recvDx, t.recvCounts, dxRows, t.sendCounts);
        a.release(recvDx);
        Tensor dxs = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, ns, h);              // [n, hidden]
        if (dBase != null && ns > 0) {
            b.copy(dBase.slice(0, t.lo, t.hi), dxs);
        }
        if (s > 0) {
            Tensor pos = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(slotRows(t.sendSlot), s));   // i32 [S]
            b.moeCombineGrouped(dxRows, pos, null, dxs, dBase != null);
            a.release(pos);
        }
        a.release(dxRows);
        if (ns > 0) {   // through the router: its logits' gradient, then the frozen router's input gradient
            ExpertRouter router = moe.router();
            Tensor dLogits = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, ns, moe.experts().length);   // [n, E]
            router.logitGrad(b, t.routed, dWeight, dLogits);
            Tensor dxr = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, ns, h);                         // [n, hidden]
            router.linear().backward(b, t.xs, dLogits, dxr);
            b.add(dxs, dxr, dxs);
            a.release(dLogits);
            a.release(dxr);
            t.routed.release(a);
            t.routed = null;
        }
        a.release(dWeight);
        gatherSlices(b, ep, dxs, dx);
        a.release(dxs);
    }

    /**
     * [M·(E+1)]: for each rank in order, the rows it sends to each expert, then its layer's token count N. Every rank must
     * have the same N (lockstep ranks run the same batch); a rank that does not is refused here, before an exchange whose
     * sizes would disagree could wait forever.
     */
    private static long[] gatherExpertCounts(TensorAllocator a, Communicator ep, int[] sendExpert, int experts, int n) {
        int m = ep.size();
        Tensor mine = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I64, experts + 1);
        long[] counts = new long[experts + 1];
        for (int e : sendExpert) {
            counts[e]++;
        }
        counts[experts] = n;
        for (int e = 0; e <= experts; e++) {
            mine.setLong(counts[e], e);
        }
        Tensor send = a.upload(MemoryCategory.COMM_BUFFERS, mine);                                  // i64 [E+1]
        Tensor gathered = a.allocate(MemoryCategory.COMM_BUFFERS, DType.I64, (long) m * (experts + 1));   // i64 [M·(E+1)]
        ep.allGather(send, gathered);
        long[] all = a.toHost(gathered).toLongArray();
        if (send != mine) {
            a.release(send);
        }
        a.release(gathered);
        for (int q = 0; q < m; q++) {
            long other = all[q * (experts + 1) + experts];
            if (other != n) {
                throw new IllegalStateException("expert-parallel rank " + ep.rank() + " of " + m + " has " + n
                        + " tokens in this MoE layer, rank " + q + " has " + other + ": the ranks must run the same batch");
            }
        }
        return all;
    }

    /** For each token-major routing slot (token·k + j), the row that carries it in send order (rows grouped by expert). */
    private static int[] slotRows(int[] sendSlot) {
        int[] rows = new int[sendSlot.length];
        for (int i = 0; i < sendSlot.length; i++) {
            rows[sendSlot[i]] = i;
        }
        return rows;
    }

    /** i32 [values.length] in the backend's memory (an empty tensor for none). */
    private static Tensor upload(TensorAllocator a, int[] values) {
        return values.length == 0 ? a.allocate(MemoryCategory.COMM_BUFFERS, DType.I32, 0)
                : a.upload(MemoryCategory.COMM_BUFFERS, Tensor.ofInts(values, values.length));
    }

    private static DenseMlp held(ExpertParallelBlock moe, int e, Communicator ep) {
        DenseMlp expert = moe.experts()[e];
        if (expert == null) {
            throw new IllegalStateException("expert-parallel rank " + ep.rank() + " of " + ep.size()
                    + " received tokens for expert " + e + ", which it does not hold");
        }
        return expert;
    }

    /** out [N, hidden] = every rank's slice [n_p, hidden] in rank order (slices padded to one size for the gather). */
    private static void gatherSlices(Backend b, Communicator ep, Tensor slice, Tensor out) {
        TensorAllocator a = b.allocator();
        int n = out.size(0);
        int h = out.size(1);
        int m = ep.size();
        int cap = (n + m - 1) / m;
        int ns = slice.size(0);
        Tensor padded = a.allocate(MemoryCategory.COMM_BUFFERS, DType.F32, cap, h);        // [cap, hidden]
        if (ns > 0) {
            b.copy(slice, padded.slice(0, 0, ns));
        }
        Tensor all = a.allocate(MemoryCategory.COMM_BUFFERS, DType.F32, (long) m * cap, h); // [M*cap, hidden]
        ep.allGather(padded, all);
        a.release(padded);
        for (int q = 0; q < m; q++) {
            int qlo = sliceStart(n, q, m);
            int qhi = sliceStart(n, q + 1, m);
            if (qhi > qlo) {
                b.copy(all.slice(0, (long) q * cap, (long) q * cap + (qhi - qlo)), out.slice(0, qlo, qhi));
            }
        }
        a.release(all);
    }
}
