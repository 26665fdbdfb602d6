package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DenseMlp;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.arch.SequenceCache;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.arch.dsv4.DeepseekV4TrainTape.Recompute;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.MlpKind;
import org.orbitrl.model.spec.ModelSpec;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * DeepSeek V4 ({@code deepseek_v4}) as transformers 5.17 defines it: {@code hc_mult} residual
 * streams joined by manifold-constrained hyper-connections around every block, sliding-window /
 * compressed-sparse / heavily-compressed attention ({@link DeepseekV4Attention}), hash-routed and
 * score-routed MoE ({@link DeepseekV4Moe}), the hyper-connection head collapse, the final norm
 * and the LM head. Linear layers carry Hugging Face module names ({@code self_attn.q_a_proj},
 * {@code mlp.experts}) so PEFT adapters attach; the weights come from the checkpoint's native
 * names ({@code attn.wq_a}, {@code ffn.experts.N.w1}, see {@link DeepseekV4Loader}).
 *
 * <p>The per-sequence decode state (sliding-window K=V rows, each compressor's open window,
 * overlap and emitted entries, the indexer's keys) is what upstream's cache layers hold. It is
 * attached to the {@link SequenceCache} it belongs to ({@link SequenceCache#attach}), so a fork
 * of a sequence (the rollout engine's prefix sharing) carries a copy and any model view can
 * continue it; the cache itself only supplies the length. A cache of another length than its
 * state (a truncated one) is refused. On a device backend the state's values stay in device memory
 * between steps (a closing compressor window's rows are read back for the pooling), and a closed
 * sequence's state is released with its cache.
 *
 * <p>Each value lives where the operation that made it ran ({@link Node}): on a device backend that
 * keeps values, a layer runs there (linears, norms, ropes, the hyper-connections with their mixes,
 * the attention, a decode step's in one launch, and the MoE block), while the choices (the experts,
 * the indexer's top-k) and the compressors' pooling run on the host; on the host backends every
 * value is a host array. A tape records the backward, which gives adapter gradients only. The logits
 * a forward returns are in the backend's memory, as every model's are.
 */
public final class DeepseekV4Model implements Trainable, AdapterTargets {
    private final DeepseekV4Config c;
    private final Backend backend;
    private final Tensor embed;                 // [vocab, hidden]
    private final Layer[] layers;
    private final float[] headFn;               // [hc, hc*hidden]
    private final float[] headBase;             // [hc]
    private final float headScale;
    private final float[] norm;                 // [hidden]
    private final Linear lmHead;                // [vocab, hidden]
    private boolean offload;                    // under recompute, the layers' input streams kept in host memory
    private final org.orbitrl.model.arch.HostBuffers hostBuffers = new org.orbitrl.model.arch.HostBuffers();

    /** One decoder layer. */
    record Layer(DeepseekV4HyperConnection attnHc, float[] attnNorm, DeepseekV4Attention attn,
                 DeepseekV4HyperConnection ffnHc, float[] ffnNorm, DeepseekV4Moe moe) {
        Layer view() {
            return new Layer(attnHc, attnNorm, attn.view(), ffnHc, ffnNorm, moe.view());
        }
    }

    DeepseekV4Model(DeepseekV4Config c, Backend backend, Tensor embed, Layer[] layers, float[] headFn, float[] headBase,
                    float headScale, float[] norm, Linear lmHead) {
        this.c = c;
        this.backend = backend;
        this.embed = embed;
        this.layers = layers;
        this.headFn = headFn;
        this.headBase = headBase;
        this.headScale = headScale;
        this.norm = norm;
        this.lmHead = lmHead;
    }

    /** The model of {@code spec} with weights from {@code src} as stored (see {@link DeepseekV4Loader}). */
    public static DeepseekV4Model load(ModelSpec spec, org.orbitrl.model.nn.WeightSource src, Backend backend) {
        return load(spec, src, backend, null);
    }

    /**
     * As {@link #load(ModelSpec, org.orbitrl.model.nn.WeightSource, Backend)}, with routed experts
     * stored in full precision quantized on load by {@code expertQuantizer} (null keeps them as stored).
     */
    public static DeepseekV4Model load(ModelSpec spec, org.orbitrl.model.nn.WeightSource src, Backend backend,
                                       java.util.function.Function<Tensor, org.orbitrl.model.nn.Weight> expertQuantizer) {
        return DeepseekV4Loader.load(DeepseekV4Config.from(spec), src, backend, expertQuantizer);
    }

    @Override
    public DeepseekV4Model view() {
        return view(backend);
    }

    @Override
    public DeepseekV4Model view(Backend other) {
        Layer[] ls = new Layer[layers.length];
        for (int i = 0; i < ls.length; i++) {
            ls[i] = layers[i].view();
        }
        return new DeepseekV4Model(c, other, embed, ls, headFn, headBase, headScale, norm, lmHead.view());
    }

    /**
     * Under recompute, each layer's input streams wait in host memory (off the heap, read back once the layer has run)
     * and come back for its backward (see {@link Trainable#setOffloadedInputs}).
     */
    @Override
    public void setOffloadedInputs(boolean on) {
        offload = on;
    }

    /** Frees the host buffers its offloaded inputs kept for later steps. */
    @Override
    public void close() {
        hostBuffers.free();
    }

    /** Quantized routed experts dequantized {@code c} at a time in the grouped expert products (0: the fused kernels). */
    @Override
    public void setExpertChunk(int c) {
        for (Layer l : layers) {
            l.moe().setExpertChunk(c);
        }
    }

    /**
     * Runs the routed experts grouped in backend memory over the host's choice (true, the default) or each active
     * expert on its own rows (false).
     */
    public void setGroupedExperts(boolean on) {
        for (Layer l : layers) {
            l.moe().setGrouped(on);
        }
    }

    public ModelSpec spec() {
        return c.spec();
    }

    @Override
    public Backend backend() {
        return backend;
    }

    @Override
    public int vocabSize() {
        return c.vocab();
    }

    @Override
    public int layers() {
        return c.layers();
    }

    /**
     * No rows in a paged pool: the model keeps each sequence's decode state (the window's K=V rows, the compressed
     * entries, the compressor's state) beside the cache, which supplies only the sequence's length (see
     * {@link #stateBytes}).
     */
    @Override
    public CacheGeometry cacheGeometry() {
        return new CacheGeometry(c.layers(), 0, 0, 0);
    }

    /**
     * Bytes (f32) of the decode state this model keeps for {@code cache} in layer {@code layer}:
     * the window's K=V rows, every compressed entry (and the indexer's keys on compressed-sparse
     * layers), the open windows' raw projections and the overlap halves. 0 for a cache it has not seen.
     */
    public long stateBytes(SequenceCache cache, int layer) {
        DeepseekV4DecodeState st = DeepseekV4DecodeState.of(cache);
        return st == null ? 0 : st.stateBytes(layer);
    }

    /**
     * Bytes of device memory ({@link org.orbitrl.kernels.MemoryCategory#KV_CACHE}) that one sequence's decode state
     * holds in every layer after {@code tokens} tokens on a backend that keeps values in device memory: the window's
     * allocation of window-1 K=V rows and {@link StateRows#WINDOW_SLACK} more; on a compressed layer the compressor's
     * open window (KV and gate, {@code rate} rows each of its width, 2·head_dim with the overlap of compressed-sparse
     * layers) and its entries' allocation
     * ({@link StateRows#capacityFor}: 16 rows doubled until the entries fit); on a compressed-sparse layer the
     * indexer's compressor likewise (width 2·index_head_dim, entries of index_head_dim). All f32: the decode kernels
     * read f32 whatever the job's KV cache dtype. What the memory planner budgets for V4 rollout: exact where the
     * allocator does not round (the CUDA allocator rounds each allocation up to 256 bytes, which V4's released widths
     * are multiples of); while an entries allocation doubles, the old one is held beside the new until its rows move.
     */
    public static long decodeStateBytes(ModelSpec spec, long tokens) {
        return DeepseekV4DecodeState.bytes(spec, tokens);
    }

    /** Layer {@code layer}'s decode state for {@code cache}, or null for a cache this model has not seen. */
    DeepseekV4Attention.State layerState(SequenceCache cache, int layer) {
        DeepseekV4DecodeState st = DeepseekV4DecodeState.of(cache);
        return st == null ? null : st.layers[layer];
    }

    /** Bytes (f32) of the compressed entries (pooled KV and indexer keys) kept for {@code cache} in {@code layer}. */
    public long compressedEntryBytes(SequenceCache cache, int layer) {
        DeepseekV4DecodeState st = DeepseekV4DecodeState.of(cache);
        return st == null ? 0 : st.entryBytes(layer);
    }

    /** A cache that supplies the sequence length; the model keeps the V4 state beside it. */
    @Override
    public KvCache newCache(int capacity) {
        return new KvCache(backend.allocator(), 1, 1, 1, 1, capacity);
    }

    @Override
    public Tensor forward(List<Segment> batch, HiddenSink hidden) {
        return placedLogits(run(batch, hidden, null));
    }

    /** The LM head over each segment's last new token alone (see {@link CausalLM#forwardLast}). */
    @Override
    public Tensor forwardLast(List<Segment> batch) {
        return placedLogits(run(batch, null, null, null, CausalLM.lastRows(batch)));
    }

    private Tensor placedLogits(Node logits) {
        return logits.onDevice() ? logits.placed(backend.allocator(), logits.size() / c.vocab(), c.vocab())
                : backend.allocator().uploadFloats(MemoryCategory.LOGITS, logits.v(), logits.size() / c.vocab(), c.vocab());
    }

    /**
     * The training forward. Without {@code recompute} every intermediate of every layer stays on the tape until the
     * backward (device memory on a device backend). With it, each layer runs untaped and keeps only its input streams;
     * the backward runs each layer again on its own tape (the same operations on the same values: the same bits,
     * the lightning indexer's choices included) and then through it, so one layer's intermediates are held at a time.
     */
    @Override
    public Trainable.Tape forwardTrain(List<int[]> sequences, boolean recompute) {
        List<Segment> batch = new ArrayList<>();
        for (int[] s : sequences) {
            batch.add(new Segment(s, null));
        }
        GradTape tape = new GradTape();
        Recompute rc = recompute ? new Recompute(layers.length) : null;
        return new DeepseekV4TrainTape(tape, run(batch, null, tape, rc), rc, c.vocab(), backend.allocator(), hostBuffers);
    }

    @Override
    public void backward(Trainable.Tape t, Tensor dLogits) {
        if (!(t instanceof DeepseekV4TrainTape tt)) {
            throw new IllegalArgumentException("not a tape of this model: " + t);
        }
        if (tt.used) {
            throw new IllegalStateException("this DeepSeek V4 tape's backward has run (or it was released): a tape "
                    + "takes one backward");
        }
        if (dLogits.numel() != tt.logits.size()) {
            throw new IllegalArgumentException("d logits has " + dLogits.numel() + " values, the logits " + tt.logits.size());
        }
        tt.used = true;
        if (Ops.keepsValues(backend)) {
            Tensor d = backend.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, dLogits.shape());
            backend.allocator().copy(dLogits, d);   // from the device or the host
            tt.logits.accDevice(backend, d);
        } else {
            Ops.acc(tt.logits, backend.allocator().toFloats(dLogits));
        }
        tt.tape.backward();
        Recompute rc = tt.recompute;
        if (rc == null) {
            return;
        }
        Node upper = rc.last;   // the head's gradient of the last layer's output
        for (int i = layers.length - 1; i >= 0 && upper.hasGrad(); i--) {
            boolean offloaded = !rc.inputs[i].onDevice();   // its value copied to the device for this layer only
            Node in = rc.inputs[i].fresh();
            GradTape lt = new GradTape();
            Node out = layer(lt, layers[i], in, rc.ids, rc.pos, rc.segs[i], false);
            out.takeGrad(upper);
            lt.backward();
            lt.release(backend.allocator());   // the layer's intermediates, now, not at the next collection
            if (offloaded) {
                in.releaseValue(backend.allocator());   // the input's copy on the device (in keeps its gradient)
            }
            rc.inputs[i].release(backend.allocator());   // the input's value (in shares it); in keeps its gradient
            rc.inputs[i] = null;
            upper = in;
        }
        upper.dropGrad();   // the embedding streams' gradient: the embedding does not train
    }

    private Node run(List<Segment> batch, HiddenSink hidden, GradTape tape) {
        return run(batch, hidden, tape, null, null);
    }

    private Node run(List<Segment> batch, HiddenSink hidden, GradTape tape, Recompute rc) {
        return run(batch, hidden, tape, rc, null);
    }

    /**
     * The forward; with {@code rc}, the layers run untaped and {@code rc} keeps their inputs (see {@link Recompute}); with
     * {@code lastRows} (untaped) the LM head runs over those rows of the final norm alone.
     */
    private Node run(List<Segment> batch, HiddenSink hidden, GradTape tape, Recompute rc, int[] lastRows) {
        int n = 0;
        for (Segment s : batch) {
            n += s.tokens().length;
        }
        int[] ids = new int[n];
        int[] pos = new int[n];
        DeepseekV4DecodeState[] seqStates = new DeepseekV4DecodeState[batch.size()];
        int[] pos0 = new int[batch.size()];
        int k = 0;
        for (int si = 0; si < batch.size(); si++) {
            Segment s = batch.get(si);
            int past = 0;
            if (s.cache() != null) {
                past = s.cache().length();
                DeepseekV4DecodeState st = DeepseekV4DecodeState.of(s.cache());
                if (st == null || (past == 0 && st.length != 0)) {
                    if (past != 0) {
                        throw new IllegalStateException("a sequence cache at length " + past + " has no DeepSeek V4 "
                                + "state: its earlier tokens were not run through a DeepSeek V4 model");
                    }
                    if (st != null) {   // a cache rewound to its start: the old state goes, a new one begins
                        st.release();
                    }
                    st = new DeepseekV4DecodeState(layers.length, backend.allocator());
                    s.cache().attach(st);
                } else if (st.length != past) {
                    throw new IllegalStateException("a sequence cache at length " + past + " has DeepSeek V4 state for "
                            + st.length + " tokens: compressed state cannot be truncated or rewound");
                }
                seqStates[si] = st;
                s.cache().reserve(s.tokens().length);
            }
            pos0[si] = past;
            for (int t = 0; t < s.tokens().length; t++) {
                int id = s.tokens()[t];
                if (id < 0 || id >= c.vocab()) {
                    throw new IllegalArgumentException("token id " + id + " is outside the vocabulary of " + c.vocab());
                }
                ids[k] = id;
                pos[k++] = past + t;
            }
        }
        int h = c.hidden();
        int hc = c.hcMult();
        Tensor emb = backend.allocator().allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h);  // [N, hidden]
        Tensor idt = backend.allocator().upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(ids, n));
        backend.embedding(embed, idt, emb);
        backend.allocator().release(idt);
        Node x;                                                                                  // [N, hc, hidden]
        if (Ops.keepsValues(backend)) {
            x = HyperConnectionOps.streams(backend, emb, n, hc, h);
        } else {
            float[] e = backend.allocator().toFloats(emb);
            float[] streams = new float[n * hc * h];
            for (int r = 0; r < n; r++) {
                for (int j = 0; j < hc; j++) {
                    System.arraycopy(e, r * h, streams, (r * hc + j) * h, h);
                }
            }
            x = new Node(streams);
        }
        if (tape != null && rc == null) {
            tape.record(x, () -> { });   // the first layer's backward reads the streams: the tape releases them
        }
        emit(hidden, 0, x, n, hc, h);
        try (Ops.RunPositions ignored = Ops.RunPositions.open(backend, pos)) {   // the untaped ropes' positions, once
            for (int i = 0; i < layers.length; i++) {
                DeepseekV4Attention.Seg[] segs = new DeepseekV4Attention.Seg[batch.size()];
                int start = 0;
                for (int si = 0; si < segs.length; si++) {
                    int len = batch.get(si).tokens().length;
                    segs[si] = new DeepseekV4Attention.Seg(start, len, pos0[si],
                            seqStates[si] == null ? null : seqStates[si].layers[i]);
                    start += len;
                }
                if (rc != null) {
                    rc.inputs[i] = x;
                    rc.segs[i] = segs;
                }
                Node in = x;
                if (tape != null && rc == null) {
                    x = layer(tape, layers[i], in, ids, pos, segs, false);
                } else {
                    try (Scratch s = Scratch.open(backend.allocator())) {   // untaped: only the output outlives the layer
                        x = s.keep(layer(null, layers[i], in, ids, pos, segs, rc == null));
                    }
                    if (rc == null) {
                        in.release(backend.allocator());   // an inference forward's streams: the next layer's output replaces them
                    } else if (offload && in.onDevice()) {   // the layer has run: its input waits on the host, off the heap
                        Tensor host = hostBuffers.take(backend.allocator(), DType.F32, n, (long) hc * h);
                        backend.allocator().copyToHostAsync(in.placed(backend.allocator(), n, (long) hc * h), host);
                        rc.inputs[i] = Node.onHost(host, backend.allocator());
                        rc.host.add(host);
                        in.release(backend.allocator());
                    }
                }
                if (i + 1 < layers.length) {
                    emit(hidden, i + 1, x, n, hc, h);
                }
            }
        }
        if (rc != null) {
            rc.ids = ids;
            rc.pos = pos;
            rc.last = x;
        }
        for (int si = 0; si < batch.size(); si++) {
            Segment s = batch.get(si);
            if (s.cache() != null) {
                s.cache().advance(s.tokens().length);
                seqStates[si].length += s.tokens().length;
            }
        }
        if (tape != null) {
            return head(tape, x, hidden, n, null);
        }
        try (Scratch s = Scratch.open(backend.allocator())) {
            Node logits = s.keep(head(null, x, hidden, n, lastRows));
            x.release(backend.allocator());
            return logits;
        }
    }

    /** The logits [N, vocab] of the last layer's streams x: the hyper-connection head, the final norm, the LM head. */
    private Node head(GradTape tape, Node x, HiddenSink hidden, int n, int[] lastRows) {
        int h = c.hidden();
        Node collapsed = DeepseekV4HyperConnection.head(tape, backend, x, headFn, headBase, headScale, c.hcMult(), h,
                c.hcEps(), c.rmsEps());
        Node normed = Ops.rmsNorm(tape, backend, collapsed, h, norm, c.rmsEps());
        if (hidden != null) {
            hidden.accept(layers.length, backend.allocator().uploadFloats(MemoryCategory.ACTIVATIONS, normed.v(), n, h));
        }
        if (lastRows != null && lastRows.length < n) {   // the sampled rows alone
            Node[] parts = new Node[lastRows.length];
            for (int i = 0; i < parts.length; i++) {
                parts[i] = Ops.rows(null, backend, normed, h, lastRows[i], 1);
            }
            normed = Ops.concatRows(null, backend, h, parts);
            n = lastRows.length;
        }
        return Ops.linear(tape, backend, lmHead, normed, n, MemoryCategory.LOGITS);
    }

    /**
     * One layer; {@code inference}: a forward no backward follows (not a training step's, whose recomputed layers must
     * give its first forward's bits), where the MoE block may take its per-pair form.
     */
    private Node layer(GradTape t, Layer l, Node x, int[] ids, int[] pos, DeepseekV4Attention.Seg[] segs, boolean inference) {
        Node w = l.attnHc().weights(t, backend, x);
        Node in = Ops.rmsNorm(t, backend, l.attnHc().collapse(t, backend, w, x), c.hidden(), l.attnNorm(), c.rmsEps());
        Node a = l.attn().forward(t, backend, in, pos, segs);
        x = l.attnHc().expand(t, backend, w, a, x);
        w = l.ffnHc().weights(t, backend, x);
        in = Ops.rmsNorm(t, backend, l.ffnHc().collapse(t, backend, w, x), c.hidden(), l.ffnNorm(), c.rmsEps());
        Node m = l.moe().forward(t, backend, in, ids, inference);
        return l.ffnHc().expand(t, backend, w, m, x);
    }

    /** Hands layer {@code index}'s input streams to {@code sink}, in the backend's memory as every model's hidden states. */
    private void emit(HiddenSink sink, int index, Node x, int n, int hc, int h) {
        if (sink != null) {
            sink.accept(index, backend.allocator().uploadFloats(MemoryCategory.ACTIVATIONS, x.v(), n, hc, h));
        }
    }

    /**
     * Bytes of frozen base weights this model holds: in the backend's memory the embedding, every linear (wo_a's head
     * groups, the routed and shared experts and the LM head included); in host memory the small tensors the host's
     * operations read as f32 arrays (norms, hyper-connection mixers, sinks, compressor position biases, selection biases)
     * and the hash layers' token-to-expert tables (i32).
     */
    @Override
    public long heldBaseBytes() {
        List<Linear> linears = new ArrayList<>(linearModules().values());
        long floats = headFn.length + headBase.length + 1 + norm.length;   // the head's scale: one float
        long bytes = 0;
        for (Layer l : layers) {
            DeepseekV4Attention a = l.attn();
            bytes += a.oA.byteSize();
            floats += l.attnNorm().length + l.ffnNorm().length + a.qNorm.length + a.kvNorm.length + a.sinks.length
                    + l.attnHc().floats() + l.ffnHc().floats();
            for (DeepseekV4Compressor comp : new DeepseekV4Compressor[]{a.compressor,
                    a.indexer == null ? null : a.indexer.compressor}) {
                if (comp != null) {
                    floats += comp.ape.length + comp.norm.length;
                }
            }
            DeepseekV4Moe m = l.moe();
            floats += m.bias == null ? 0 : m.bias.length;
            bytes += m.tid2eid == null ? 0 : (long) Integer.BYTES * m.tid2eid.length;
            for (DenseMlp e : m.experts) {
                linears.addAll(List.of(e.gate(), e.up(), e.down()));
            }
        }
        return bytes + Float.BYTES * floats + org.orbitrl.model.arch.BaseBytes.of(List.of(embed), linears);
    }

    /** Every adaptable linear by its Hugging Face module name. */
    @Override
    public Map<String, Linear> linearModules() {
        Map<String, Linear> out = new LinkedHashMap<>();
        for (Layer l : layers) {
            DeepseekV4Attention a = l.attn();
            List<Linear> ls = new ArrayList<>(List.of(a.qA, a.qB, a.kv, a.oB));
            if (a.compressor != null) {
                ls.addAll(List.of(a.compressor.wkv, a.compressor.wgate));
            }
            if (a.indexer != null) {
                ls.addAll(List.of(a.indexer.compressor.wkv, a.indexer.compressor.wgate, a.indexer.qB,
                        a.indexer.weightsProj));
            }
            ls.add(l.moe().router);
            DenseMlp sh = l.moe().shared;
            ls.addAll(List.of(sh.gate(), sh.up(), sh.down()));
            for (Linear lin : ls) {
                out.put(lin.name(), lin);
            }
        }
        out.put(lmHead.name(), lmHead);
        return out;
    }

    @Override
    public List<ExpertSet> expertSets() {
        List<ExpertSet> out = new ArrayList<>();
        for (int i = 0; i < layers.length; i++) {
            List<Linear> g = new ArrayList<>();
            List<Linear> u = new ArrayList<>();
            List<Linear> d = new ArrayList<>();
            for (DenseMlp e : layers[i].moe().experts) {
                g.add(e.gate());
                u.add(e.up());
                d.add(e.down());
            }
            out.add(new ExpertSet("model.layers." + i + ".mlp.experts", g, u, d));
        }
        return out;
    }

    /** The attention kind of layer {@code i}. */
    public AttentionKind attentionKind(int i) {
        return c.kinds().get(i);
    }

    /** The MLP kind of layer {@code i}. */
    public MlpKind mlpKind(int i) {
        return c.mlpKinds().get(i);
    }
}
