package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;

/**
 * RoPE and causal attention backward on the device. Attention backward recomputes the
 * probabilities from q and k (nothing quadratic is stored). Outside exact mode, head dims
 * D = Dv ∈ {64, 128} with aligned rows take the tensor-core kernels ({@link CudaMmaAttention},
 * {@code -Dorbit.cuda.mmaAttention=bf16v4|bf16v3|bf16v2|bf16|tf32|off} picks the variant or turns them off); other head dims up to 128 (and every
 * shape in exact mode) the tiled f32 kernels ({@link CudaTiledAttentionBackward}); larger ones (up
 * to 640, e.g. absorbed MLA) the warp-per-row kernels of {@code train.cu} in two launches: one warp
 * per (query, head) finds the row's log-sum-exp and writes dq; one warp per (key, kv head) sums dk
 * and dv over the queries that see the key, in ascending order. Every path is deterministic: no atomics, sums in an order
 * fixed by the shapes.
 *
 * <p>{@code -Dorbit.cuda.attentionBackward=warp} (read at each call) sends every shape to the
 * warp-per-row kernels, for comparison; the default is {@code tiled} (tensor-core or tiled f32).
 */
final class CudaAttentionBackward {
    /** Largest head dimension (ATTB_MAXC · 32 in train.cu). */
    static final int MAX_HEAD_DIM = 20 * 32;
    /** The system property choosing the kernels: {@code tiled} (default) or {@code warp}. */
    static final String KERNELS_PROPERTY = "orbit.cuda.attentionBackward";

    private final CudaContext ctx;
    private final CudaAttentionOps forward;
    private final Kernel ropeBackward;
    private final Kernel backwardQ;
    private final Kernel backwardKv;
    private final CudaTiledAttentionBackward tiled;

    CudaAttentionBackward(CudaContext ctx, CudaAttentionOps forward) {
        this.ctx = ctx;
        this.forward = forward;
        this.ropeBackward = ctx.kernel("train", "rope_backward_f32");
        this.backwardQ = ctx.kernel("train", "attention_backward_q");
        this.backwardKv = ctx.kernel("train", "attention_backward_kv");
        this.tiled = new CudaTiledAttentionBackward(ctx);
    }

    void ropeBackward(Tensor dx, Tensor positions, RopeTable table) {
        ctx.dev("ropeBackward dx", dx);
        ctx.devContiguous("ropeBackward positions", positions, null);
        CudaTrainOps.integral("ropeBackward positions", positions);
        if (dx.rank() != 3 || dx.dtype() != DType.F32 || dx.strides()[2] != 1) {
            throw new IllegalArgumentException("ropeBackward: dx must be f32 [T, H, D] with a contiguous last dimension, got " + dx);
        }
        int t = dx.size(0);
        int h = dx.size(1);
        int half = table.rotaryDim() / 2;
        if (table.rotaryDim() > dx.dim(2) || positions.numel() != t) {
            throw new IllegalArgumentException("ropeBackward: rotary dim " + table.rotaryDim() + " of dx " + dx
                    + " with positions " + positions);
        }
        long total = (long) t * h * half;
        if (total == 0) {
            return;
        }
        Tensor[] cs = forward.deviceTable(table);
        long[] st = dx.strides();
        ctx.launch(ropeBackward, ctx.gridFor(total, 256), 256, dx, st[0], st[1], t, h, half,
                table.style() == RopeTable.Style.INTERLEAVED ? 1 : 0, positions, positions.dtype() == DType.I64 ? 1 : 0,
                cs[0], cs[1], table.maxPositions(), ctx.errorFlag);
    }

    void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor dout, int queryStart, AttentionSpec spec,
                           Tensor dq, Tensor dk, Tensor dv) {
        attentionBackward(q, k, v, null, null, dout, queryStart, spec, dq, dk, dv);
    }

    /** As above, with the forward's output and statistics as {@code Backend.attentionBackward} takes them (both or neither). */
    void attentionBackward(Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor dout, int queryStart,
                           AttentionSpec spec, Tensor dq, Tensor dk, Tensor dv) {
        String[] names = {"q", "k", "v", "dout", "dq", "dk", "dv"};
        Tensor[] all = {q, k, v, dout, dq, dk, dv};
        for (int i = 0; i < all.length; i++) {
            Tensor t = all[i];
            ctx.dev("attentionBackward " + names[i], t);
            if (t.rank() != 3 || t.dtype() != DType.F32 || t.strides()[2] != 1) {
                throw new IllegalArgumentException("attentionBackward: " + names[i]
                        + " must be f32 rank 3 with a contiguous last dimension, got " + t);
            }
        }
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int s = k.size(0);
        int hkv = k.size(1);
        int dvd = v.size(2);
        if (k.dim(2) != d || v.dim(0) != s || v.dim(1) != hkv || hkv == 0 || hq % hkv != 0
                || dout.dim(0) != tq || dout.dim(1) != hq || dout.dim(2) != dvd
                || !java.util.Arrays.equals(dq.shape(), q.shape()) || !java.util.Arrays.equals(dk.shape(), k.shape())
                || !java.util.Arrays.equals(dv.shape(), v.shape())) {
            throw new IllegalArgumentException("attentionBackward: q " + q + ", k " + k + ", v " + v + ", dout " + dout
                    + ", dq " + dq + ", dk " + dk + ", dv " + dv + " do not agree");
        }
        if (queryStart < 0 || queryStart + tq > s) {
            throw new IllegalArgumentException("attentionBackward: queries reach position " + (queryStart + tq - 1)
                    + " but only " + s + " keys are given");
        }
        if (d > MAX_HEAD_DIM || dvd > MAX_HEAD_DIM) {
            throw new IllegalArgumentException("attentionBackward: head dims " + d + "/" + dvd + " exceed " + MAX_HEAD_DIM);
        }
        Tensor sinks = spec.sinks();
        if (sinks != null) {
            ctx.devContiguous("attentionBackward sinks", sinks, DType.F32);
            if (sinks.numel() != hq) {
                throw new IllegalArgumentException("attentionBackward: sinks " + sinks + " must hold one logit per query head (" + hq + ")");
            }
        }
        if ((out == null) != (lse == null)) {
            throw new IllegalArgumentException("attentionBackward: the forward's output and its statistics come together, got out "
                    + out + " and lse " + lse);
        }
        if (out != null) {
            ctx.dev("attentionBackward out", out);
            ctx.devContiguous("attentionBackward lse", lse, DType.F32);
            if (out.rank() != 3 || out.dtype() != DType.F32 || out.strides()[2] != 1 || !java.util.Arrays.equals(out.shape(), dout.shape())
                    || lse.numel() != (long) tq * hq) {
                throw new IllegalArgumentException("attentionBackward: out " + out + " must be f32 shaped as dout " + dout
                        + " with a contiguous last dimension, lse " + lse + " one value per query and head");
            }
        }
        long items = (long) tq * hq;
        if (items == 0 || s == 0) {
            return;
        }
        String kernels = System.getProperty(KERNELS_PROPERTY, "tiled");
        if (!kernels.equals("tiled") && !kernels.equals("warp")) {
            throw new IllegalArgumentException("-D" + KERNELS_PROPERTY + "=" + kernels + ": expected tiled or warp");
        }
        if (kernels.equals("tiled") && !forward.exact && CudaMmaAttention.enabled() && CudaMmaAttention.fits(q, k, v, dout)) {
            forward.mma.backward(q, k, v, out, lse, dout, queryStart, spec, dq, dk, dv);
            return;
        }
        if (!forward.exact && CudaMqaAttention.fitsBackward(q, k, v, spec, dout, dq, dk, dv)) {   // one wide shared head
            forward.mqa.backward(q, k, v, dout, queryStart, spec, dq, dk, dv);
            return;
        }
        if (kernels.equals("tiled") && CudaTiledAttentionBackward.fits(d, dvd)) {
            // statistics from exact mode's tiled forward only (natural log); the tensor-core forward's may be in base 2
            boolean stats = forward.exact && out != null;
            tiled.run(q, k, v, stats ? out : null, stats ? lse : null, dout, queryStart, spec, dq, dk, dv);
            return;
        }
        // lse and delta per (query, head), in two halves of one scratch buffer: [2, T, Hq]
        Tensor stats = ctx.scratch(CudaContext.Scratch.ATTENTION_BACKWARD, DType.F32, 2 * items);
        Tensor rowLse = stats.slice(0, 0, items);
        Tensor delta = stats.slice(0, items, 2 * items);
        long[] qs = q.strides();
        long[] ks = k.strides();
        long[] vs = v.strides();
        long[] os = dout.strides();
        long[] dqs = dq.strides();
        long[] dks = dk.strides();
        long[] dvs = dv.strides();
        ctx.launch(backwardQ, items, 32, q, qs[0], qs[1], k, ks[0], ks[1], v, vs[0], vs[1], dout, os[0], os[1],
                dq, dqs[0], dqs[1], rowLse, delta, tq, hq, hkv, d, dvd, queryStart, spec.slidingWindow(), spec.scale(), sinks);
        ctx.launch(backwardKv, (long) s * hkv, 32, q, qs[0], qs[1], k, ks[0], ks[1], v, vs[0], vs[1], dout, os[0], os[1],
                dk, dks[0], dks[1], dv, dvs[0], dvs[1], rowLse, delta, tq, hq, hkv, d, dvd, queryStart, spec.slidingWindow(),
                spec.scale());
    }
}
