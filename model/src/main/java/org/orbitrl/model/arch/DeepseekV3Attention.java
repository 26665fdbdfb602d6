package org.orbitrl.model.arch;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.kv.PagedDecode;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;

import java.util.ArrayList;
import java.util.List;

/**
 * DeepSeek-V3 multi-head latent attention. Queries: {@code q_b_proj(rmsnorm(q_a_proj(x)))} (or
 * {@code q_proj(x)}), per head a no-rope part and a rope part. Keys and values:
 * {@code kv_a_proj_with_mqa(x)} gives the latent c [R] and one rope key shared by all heads;
 * {@code kv_b_proj(rmsnorm(c))} expands the latent to every head's no-rope key and value.
 *
 * <p>Attention runs in the absorbed form, in training and in decoding alike, so that a training
 * prefill and a cached decode perform the same operations per token (bit-identical log-probs with
 * batch-invariant kernels). Each token contributes one entry {@code [rmsnorm(c), rope key]}
 * ({@code R + rope} numbers: all a KV cache stores, as one "key head" whose first R channels are
 * also the value). Each head's no-rope query is taken through its slice of kv_b_proj's key rows
 * into latent space, attends over the entries (one shared KV head), and the latent output is taken
 * through the head's value rows. Where an adapter changes kv_b_proj, its effective matrix is the
 * adapted layer's image of the identity (exact for LoRA and OFT, both linear in the input), and
 * backward hands the adapter the gradient of that matrix through the same identity.
 *
 * <p>Rope pairs channels (2i, 2i+1) when {@code rope_interleave} (DeepSeek's layout): transformers
 * permutes those pairs into rotate-half order first, which reorders the query and key channels
 * alike and leaves every dot product unchanged.
 */
final class DeepseekV3Attention {
    final Linear q;      // [H*qk, hidden], null when q_lora_rank > 0
    final Linear qA;     // [qLora, hidden], null for a plain q_proj
    final Linear qB;     // [H*qk, qLora]
    final Linear kvA;    // [R+rope, hidden]
    final Linear kvB;    // [H*(nope+v), R]
    final Linear o;      // [hidden, H*v]
    final Tensor qANorm;  // [qLora] or null
    final Tensor kvANorm; // [R]
    private final int layer;
    private final int heads;
    private final int r;
    private final int nope;
    private final int rot;
    private final int qk;
    private final int vd;
    private final float eps;
    private final MlaHeadProducts headProducts;   // the per-head products with kv_b's matrix, grouped
    private final AttentionSpec spec;
    /**
     * {@code -Dorbit.mla.kvbTerms=merged}: a LoRA on kv_b_proj merged into the matrix in every forward, as an OFT is (the
     * form {@link #lowRankKvB} replaced; for comparisons).
     */
    static final String KVB_TERMS = "orbit.mla.kvbTerms";
    static final String MERGED_KVB = "merged";

    private Tensor baseKvB; // [H*(nope+v), R] f32 dequantized kv_b_proj for the absorbed form, when quantized
    private Tensor eye;     // [R, R] the identity whose image under an adapted kv_b_proj is its matrix (the model's, shared)

    /** What backward needs. Attention probabilities are recomputed, not stored. */
    static final class Tape {
        Tensor x;        // [N, hidden] normed input
        Tensor qa;       // [N, qLora] q_a_proj output, before its norm
        Tensor qan;      // [N, qLora] after the norm (q_b_proj input)
        Tensor latent;   // [N, R] before kv_a_layernorm
        Tensor q3;       // [N, H, qk] queries after rope
        Tensor qLat;     // [N, H, R+rope] absorbed queries
        Tensor entry;    // [N, 1, R+rope] normed latent and rope key
        Tensor outLat;   // [N, H, R] attention output in latent space
        Tensor kvbW;     // [H*(nope+v), R] the kv_b_proj matrix used
        boolean kvbWOwned;   // kvbW is the adapted layer's image made for this forward (else a weight, kept)
        Tensor attn;     // [N, H*v] o_proj input

        /** Releases the layer's saved activations once its backward has been issued (x, the normed input, included). */
        void release(TensorAllocator a) {
            for (Tensor t : new Tensor[]{x, qa, qan, latent, q3, qLat, entry, outLat, kvbWOwned ? kvbW : null, attn}) {
                if (t != null) {
                    a.release(t);
                }
            }
            x = qa = qan = latent = q3 = qLat = entry = outLat = kvbW = attn = null;
            kvbWOwned = false;
        }
    }

    DeepseekV3Attention(int layer, DeepseekV3Config c, Linear q, Linear qA, Linear qB, Linear kvA, Linear kvB, Linear o,
                        Tensor qANorm, Tensor kvANorm) {
        this.layer = layer;
        this.q = q;
        this.qA = qA;
        this.qB = qB;
        this.kvA = kvA;
        this.kvB = kvB;
        this.o = o;
        this.qANorm = qANorm;
        this.kvANorm = kvANorm;
        this.heads = c.heads();
        this.r = c.kvLoraRank();
        this.nope = c.qkNope();
        this.rot = c.qkRope();
        this.qk = c.qkHeadDim();
        this.vd = c.vHeadDim();
        this.eps = c.rmsEps();
        this.headProducts = new MlaHeadProducts(heads, nope, vd, r);
        this.spec = new AttentionSpec(c.softmaxScale(), 0, null);
    }

    /** The same frozen weights with fresh, adapter-free linear layers. */
    DeepseekV3Attention view(DeepseekV3Config c) {
        DeepseekV3Attention a = new DeepseekV3Attention(layer, c, q == null ? null : q.view(), qA == null ? null : qA.view(),
                q == null ? qB.view() : null, kvA.view(), kvB.view(), o.view(), qANorm, kvANorm);
        a.baseKvB = baseKvB;
        a.eye = eye;
        return a;
    }

    List<Linear> linears() {
        List<Linear> out = new ArrayList<>();
        if (q != null) {
            out.add(q);
        } else {
            out.add(qA);
            out.add(qB);
        }
        out.add(kvA);
        out.add(kvB);
        out.add(o);
        return out;
    }

    private static Tensor alloc(TensorAllocator a, long... shape) {
        return a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, shape);
    }

    /** An f32 activation its first operation writes whole: no zero fill ({@link TensorAllocator#allocateUninitialized}). */
    private static Tensor written(TensorAllocator a, long... shape) {
        return a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, shape);
    }

    /**
     * x [N, hidden] (normed input) -> out [N, hidden]. Segments without a cache attend to their own
     * tokens' entries (training); segments with one append their entries to it and attend over the
     * cached past too. Both run the same absorbed-form operations per token.
     */
    void forward(Backend b, Tensor x, Tensor positions, List<CausalLM.Segment> batch, RopeTable rope, Tensor out,
                 Tape tape) {
        forward(b, x, positions, batch, null, rope, out, tape);
    }

    /**
     * As above; with {@code decode} (a decode step over a paged latent pool, one token a sequence: {@code batch} unused,
     * null in a captured step) the step's entries are written with one backend call and every sequence's query heads
     * attend over their cached entries with one more ({@link PagedDecode}), the values the entries' first R channels.
     */
    void forward(Backend b, Tensor x, Tensor positions, List<CausalLM.Segment> batch, PagedDecode decode, RopeTable rope,
                 Tensor out, Tape tape) {
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        Tensor qs = written(a, n, (long) heads * qk);                       // [N, H*qk]
        Tensor qa = null;
        Tensor qan = null;
        if (q != null) {
            q.forward(b, x, qs);
        } else {
            qa = written(a, n, qA.out());                                   // [N, qLora]
            qA.forward(b, x, qa);
            qan = written(a, n, qA.out());                                  // [N, qLora]
            b.rmsNorm(qa, qANorm, eps, qan);
            qB.forward(b, qan, qs);
        }
        Tensor q3 = qs.reshape(n, heads, qk);
        b.rope(q3.slice(2, nope, qk), positions, rope);
        Tensor kva = written(a, n, r + rot);                                 // [N, R+rope]
        kvA.forward(b, x, kva);
        Tensor latent = written(a, n, r);                                    // [N, R]
        b.copy(kva.slice(1, 0, r), latent);
        Tensor latentN = written(a, n, r);                                   // [N, R]
        b.rmsNorm(latent, kvANorm, eps, latentN);
        Tensor kRot = written(a, n, 1, rot);                                 // [N, 1, rope]
        b.copy(kva.slice(1, r, r + rot), kRot.reshape(n, rot));
        b.rope(kRot, positions, rope);

        int w = r + rot;
        Tensor entry = written(a, n, 1, w);                                  // [N, 1, R+rope] what a cache keeps
        b.copy(latentN, entry.select(1, 0).slice(1, 0, r));
        b.copy(kRot.select(1, 0), entry.select(1, 0).slice(1, r, w));
        Linear.AdapterHook.LowRank lora = lowRankKvB();                  // an enabled LoRA on kv_b: its terms, unmerged
        Tensor kvbW = lora != null ? baseWeight(b) : absorbWeight(b);     // [H*(nope+v), R]
        boolean ownsKvbW = lora == null && adaptedKvB();                   // the adapted layer's image, made here
        Tensor qLat = written(a, n, heads, w);                               // [N, H, R+rope]
        // key rows absorbed: qLat_h = qNope_h · W_kb_h, every head's in a few grouped calls
        if (lora != null) {
            headProducts.timesKeyBlockLowRank(b, q3.slice(2, 0, nope), kvbW, lora, qLat.slice(2, 0, r));
        } else {
            headProducts.timesBlock(b, q3.slice(2, 0, nope), kvbW, MlaHeadProducts.Block.KEY, qLat.slice(2, 0, r));
        }
        b.copy(q3.slice(2, nope, qk), qLat.slice(2, r, w));
        Tensor outLat = written(a, n, heads, r);                             // [N, H, R]
        if (decode != null) {
            decode.write(b, layer, entry.reshape(n, w), null);
            decode.attend(b, layer, qLat, outLat, spec);
        } else {
            SegmentAttention.attend(b, layer, batch, qLat, entry, entry.slice(2, 0, r), true, spec, outLat);
        }
        Tensor attn = written(a, n, heads, vd);                              // [N, H, v]
        // value rows: attn_h = outLat_h · W_vb_hᵀ
        if (lora != null) {
            headProducts.timesValueBlockTLowRank(b, outLat, kvbW, lora, attn);
        } else {
            headProducts.timesBlockT(b, outLat, kvbW, MlaHeadProducts.Block.VALUE, attn);
        }
        Tensor attnFlat = attn.reshape(n, (long) heads * vd);
        o.forward(b, attnFlat, out);
        for (Tensor t : new Tensor[]{kva, latentN, kRot}) {
            a.release(t);   // copied into the entry
        }
        if (tape == null) {   // nothing is kept: every temporary at its last use (a cache copied the entry)
            for (Tensor t : new Tensor[]{qs, qa, qan, latent, entry, qLat, outLat, attn, ownsKvbW ? kvbW : null}) {
                if (t != null) {
                    a.release(t);
                }
            }
        }
        if (tape != null) {
            tape.x = x;
            tape.qa = qa;
            tape.qan = qan;
            tape.latent = latent;
            tape.q3 = q3;
            tape.qLat = qLat;
            tape.entry = entry;
            tape.outLat = outLat;
            tape.kvbW = lora != null ? null : kvbW;   // a LoRA's: its backward makes the adapted matrix it needs
            tape.kvbWOwned = ownsKvbW;
            tape.attn = attnFlat;
        }
    }

    /**
     * kv_b_proj's matrix as the absorbed form multiplies it, [H*(nope+v), R]: the base weight (dequantized
     * once if quantized), or with an enabled adapter the adapted layer's image of the identity, transposed.
     */
    private Tensor absorbWeight(Backend b) {
        if (adaptedKvB()) {
            Tensor img = alloc(b.allocator(), r, kvB.out());               // [R, H*(nope+v)]
            kvB.forward(b, eye(), img);
            Tensor eff = alloc(b.allocator(), kvB.out(), r);               // [H*(nope+v), R]
            b.copy(img.transpose(0, 1), eff);
            b.allocator().release(img);
            return eff;
        }
        return baseWeight(b);
    }

    /** kv_b_proj's base matrix, [H*(nope+v), R]: the weight itself, or dequantized once (kept) if quantized. */
    private Tensor baseWeight(Backend b) {
        Weight wt = kvB.weight();
        if (wt instanceof Weight.Dense d) {
            return d.w();
        }
        if (baseKvB == null) {
            Weight.Quantized qw = (Weight.Quantized) wt;
            Tensor t = b.allocator().allocate(MemoryCategory.DEQUANT_BUFFERS, DType.F32, kvB.out(), r);
            b.dequantize(qw.w(), t);
            baseKvB = t;
        }
        return baseKvB;
    }

    private boolean adaptedKvB() {
        return kvB.adapter() != null && kvB.adapter().enabled();
    }

    /**
     * The enabled adapter's terms on kv_b_proj when it is a LoRA (the slot's adapter at this moment), else null. The
     * absorbed form then multiplies the base matrix and adds the adapter's terms per head ({@link
     * MlaHeadProducts#timesKeyBlockLowRank}), never making the adapted matrix: a forward of N tokens costs the LoRA's
     * products of its N·H rows instead of the adapted layer's image of the identity, R·H·(nope+v)·R multiply-adds
     * whatever N (a decode step of one token a sequence made it again in every layer).
     */
    private Linear.AdapterHook.LowRank lowRankKvB() {
        Linear.AdapterHook h = kvB.adapter();
        if (h == null || !h.enabled() || h.transformsInput() || MERGED_KVB.equals(System.getProperty(KVB_TERMS))) {
            return null;
        }
        return h.resolved().lowRank();
    }

    /**
     * The [R, R] identity in the backend's memory, built on the host and uploaded once by the model for all its layers
     * ({@link #identity(TensorAllocator, int)}), so that a forward with an adapted kv_b_proj uploads nothing (a decode
     * step's stays capturable).
     */
    void useIdentity(Tensor identity) {
        if (identity.dim(0) != r || identity.dim(1) != r) {
            throw new IllegalArgumentException("layer " + layer + ": the identity must be [" + r + ", " + r + "], got " + identity);
        }
        this.eye = identity;
    }

    /** The [r, r] identity uploaded into {@code a}'s memory. */
    static Tensor identity(TensorAllocator a, int r) {
        float[] id = new float[r * r];
        for (int i = 0; i < r; i++) {
            id[i * r + i] = 1f;
        }
        return a.upload(MemoryCategory.ACTIVATIONS, Tensor.of(id, r, r));
    }

    private Tensor eye() {
        if (eye == null) {
            throw new IllegalStateException("layer " + layer + ": an adapted kv_b_proj needs the model's identity (useIdentity)");
        }
        return eye;
    }

    /** dout [N, hidden] -> dx [N, hidden] (overwritten). Segments must have had no cached past. */
    void backward(Backend b, Tape tape, Tensor positions, int[] segmentLengths, RopeTable rope, Tensor dout, Tensor dx) {
        TensorAllocator a = b.allocator();
        int n = dout.size(0);
        // a LoRA's forward left its terms unmerged: the products below take the adapted matrix, made once for them
        Tensor kvbW = tape.kvbW != null ? tape.kvbW : absorbWeight(b);    // [H*(nope+v), R]
        boolean madeKvbW = tape.kvbW == null && adaptedKvB();
        Tensor dattn = alloc(a, n, (long) heads * vd);                     // [N, H*v]
        o.backward(b, tape.attn, dout, dattn);
        boolean adapted = adaptedKvB();
        int w = r + rot;
        Tensor dW = adapted ? alloc(a, kvB.out(), r) : null;              // [H*(nope+v), R] d loss / d kv_b matrix
        // value rows: attn_h = outLat_h · W_vb_hᵀ
        Tensor dOutLat = alloc(a, n, heads, r);                            // [N, H, R]
        Tensor dattn3 = dattn.reshape(n, heads, vd);
        headProducts.timesBlock(b, dattn3, kvbW, MlaHeadProducts.Block.VALUE, dOutLat);
        if (adapted) {
            headProducts.blockGrad(b, dattn3, tape.outLat, MlaHeadProducts.Block.VALUE, dW);
        }
        a.release(dattn);   // each gradient below is released at its last use
        // attention over the entries (one shared head; its first R channels are also the value)
        Tensor dqLat = alloc(a, n, heads, w);                              // [N, H, R+rope]
        Tensor dEntry = alloc(a, n, 1, w);                                 // [N, 1, R+rope]
        Tensor dEntryV = alloc(a, n, 1, r);                                // [N, 1, R]
        int start = 0;
        for (int t : segmentLengths) {
            Tensor e = tape.entry.slice(0, start, start + t);
            b.attentionBackward(tape.qLat.slice(0, start, start + t), e, e.slice(2, 0, r),
                    dOutLat.slice(0, start, start + t), 0, spec, dqLat.slice(0, start, start + t),
                    dEntry.slice(0, start, start + t), dEntryV.slice(0, start, start + t));
            start += t;
        }
        a.release(dOutLat);
        Tensor dLatentN = alloc(a, n, r);                                  // [N, R]
        b.copy(dEntry.select(1, 0).slice(1, 0, r), dLatentN);
        b.add(dLatentN, dEntryV.reshape(n, r), dLatentN);
        a.release(dEntryV);
        Tensor dkRot = alloc(a, n, 1, rot);                                // [N, 1, rope]
        b.copy(dEntry.select(1, 0).slice(1, r, w), dkRot.reshape(n, rot));
        a.release(dEntry);
        b.ropeBackward(dkRot, positions, rope);
        // key rows: qLat_h = qNope_h · W_kb_h
        Tensor dq = alloc(a, n, heads, qk);                                // [N, H, qk]
        Tensor dqLatKeys = dqLat.slice(2, 0, r);
        headProducts.timesBlockT(b, dqLatKeys, kvbW, MlaHeadProducts.Block.KEY, dq.slice(2, 0, nope));
        if (madeKvbW) {
            a.release(kvbW);   // its last use
        }
        if (adapted) {
            headProducts.blockGrad(b, tape.q3.slice(2, 0, nope), dqLatKeys, MlaHeadProducts.Block.KEY, dW);
        }
        b.copy(dqLat.slice(2, r, w), dq.slice(2, nope, qk));
        a.release(dqLat);
        b.ropeBackward(dq.slice(2, nope, qk), positions, rope);
        if (adapted) {
            // the adapter's kv_b matrix was read as kv_b(I)ᵀ: its gradient enters through that image
            Tensor dImg = alloc(a, r, kvB.out());                          // [R, H*(nope+v)]
            b.copy(dW.transpose(0, 1), dImg);
            Tensor dEye = alloc(a, r, r);                                  // [R, R] the identity's gradient, unused
            kvB.backward(b, eye(), dImg, dEye);
            for (Tensor t : new Tensor[]{dImg, dEye, dW}) {
                a.release(t);
            }
        }
        Tensor dLatent = alloc(a, n, r);                                   // [N, R]
        b.rmsNormBackward(tape.latent, kvANorm, eps, dLatentN, dLatent);
        a.release(dLatentN);
        Tensor dkva = alloc(a, n, w);                                      // [N, R+rope]
        b.copy(dLatent, dkva.slice(1, 0, r));
        b.copy(dkRot.reshape(n, rot), dkva.slice(1, r, w));
        a.release(dLatent);
        a.release(dkRot);
        kvA.backward(b, tape.x, dkva, dx);
        a.release(dkva);
        Tensor tmp = alloc(a, n, dx.size(1));                              // [N, hidden]
        Tensor dqs = dq.reshape(n, (long) heads * qk);
        if (q != null) {
            q.backward(b, tape.x, dqs, tmp);
        } else {
            Tensor dqan = alloc(a, n, qA.out());                           // [N, qLora]
            qB.backward(b, tape.qan, dqs, dqan);
            Tensor dqa = alloc(a, n, qA.out());                            // [N, qLora]
            b.rmsNormBackward(tape.qa, qANorm, eps, dqan, dqa);
            qA.backward(b, tape.x, dqa, tmp);
            a.release(dqan);
            a.release(dqa);
        }
        a.release(dq);
        b.add(dx, tmp, dx);
        a.release(tmp);
    }
}
