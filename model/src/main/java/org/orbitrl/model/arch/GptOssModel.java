package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Placement;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.nn.WeightLoader;
import org.orbitrl.model.nn.WeightSource;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;

/**
 * gpt-oss ({@code gpt_oss}): pre-norm decoder layers of sink attention (alternating sliding and
 * full per {@code layer_types}) and a sparse MoE block of clamped-SwiGLU experts, a final RMSNorm
 * and the LM head. Weights keep the Hugging Face names; attention, router, embeddings and head are
 * zero-copy views of the mapped checkpoint, experts are MXFP4 views as shipped (or full precision).
 */
public final class GptOssModel implements Trainable, AdapterTargets {

    /** {@code expertQuantizer}: quantizes full-precision experts on load; null keeps them as stored. */
    public record LoadOptions(Function<Tensor, Weight> expertQuantizer) {
        public static LoadOptions full() {
            return new LoadOptions(null);
        }
    }

    private final GptOssConfig config;
    private final Backend backend;
    private final Tensor embed;       // [vocab, hidden]
    private final Layer[] layers;
    private final Tensor finalNorm;   // [hidden]
    private final Linear lmHead;      // [vocab, hidden]
    private final RopeTable rope;

    /** One decoder layer. */
    record Layer(Tensor inputNorm, Tensor postNorm, GptOssAttention attention, GptOssMoe moe) {
    }

    private GptOssModel(GptOssConfig config, Backend backend, Tensor embed, Layer[] layers, Tensor finalNorm,
                        Linear lmHead, RopeTable rope) {
        this.config = config;
        this.backend = backend;
        this.embed = embed;
        this.layers = layers;
        this.finalNorm = finalNorm;
        this.lmHead = lmHead;
        this.rope = rope;
    }

    /**
     * Builds the model from named weights, checking every tensor's shape and that the source holds
     * exactly the tensors the architecture needs (missing and unexpected names are both errors).
     */
    public static GptOssModel load(GptOssConfig c, WeightSource src, Backend backend, LoadOptions options) {
        Set<String> used = new HashSet<>();
        WeightLoader w = new WeightLoader(src, used);
        TensorAllocator place = backend.allocator();
        int h = c.hidden();
        int qDim = c.heads() * c.headDim();
        int kvDim = c.kvHeads() * c.headDim();
        boolean bias = c.attentionBias();
        Tensor embed = Placement.tensor(place, w.tensor("model.embed_tokens.weight", c.vocab(), h));
        Layer[] layers = new Layer[c.layers()];
        for (int i = 0; i < c.layers(); i++) {
            String p = "model.layers." + i + ".";
            Tensor sinks = Placement.tensor(place, w.tensor(p + "self_attn.sinks", c.heads()).to(DType.F32)); // f32 [Hq]
            GptOssAttention attn = new GptOssAttention(i, c,
                    linear(w, place, p + "self_attn.q_proj", qDim, h, bias),
                    linear(w, place, p + "self_attn.k_proj", kvDim, h, bias),
                    linear(w, place, p + "self_attn.v_proj", kvDim, h, bias),
                    linear(w, place, p + "self_attn.o_proj", h, qDim, bias), sinks);
            Linear[][] experts = GptOssExpertLoader.load(w, c, p + "mlp.experts", options.expertQuantizer());
            for (Linear[] kind : experts) {
                for (int e = 0; e < kind.length; e++) {
                    kind[e] = Placement.linear(place, kind[e]);
                }
            }
            GptOssMoe moe = new GptOssMoe(linear(w, place, p + "mlp.router", c.experts(), h, true), experts[0], experts[1],
                    c.topK(), c.swigluAlpha(), c.swigluLimit());
            layers[i] = new Layer(Placement.tensor(place, w.tensor(p + "input_layernorm.weight", h)),
                    Placement.tensor(place, w.tensor(p + "post_attention_layernorm.weight", h)), attn, moe);
        }
        Tensor norm = Placement.tensor(place, w.tensor("model.norm.weight", h));
        Linear head = c.tieEmbeddings() && !src.has("lm_head.weight")
                ? new Linear("lm_head", Weight.of(embed), null)
                : linear(w, place, "lm_head", c.vocab(), h, false);
        Set<String> extra = new HashSet<>(src.names());
        extra.removeAll(used);
        extra.removeIf(n -> n.endsWith("rotary_emb.inv_freq"));
        if (!extra.isEmpty()) {
            throw new IllegalArgumentException("checkpoint has tensors a gpt_oss model does not use: "
                    + extra.stream().sorted().limit(10).toList() + (extra.size() > 10 ? " and " + (extra.size() - 10) + " more" : ""));
        }
        RopeTable rope = RopeTable.of(c.rope(), c.headDim(), c.maxPositions(), RopeTable.Style.HALF);
        return new GptOssModel(c, backend, embed, layers, norm, head, rope);
    }

    /** A linear layer with its weight and bias placed in the backend's memory. */
    private static Linear linear(WeightLoader w, TensorAllocator place, String module, int out, int in, boolean bias) {
        return Placement.linear(place, new Linear(module, w.weight(module, out, in), bias ? w.bias(module, out) : null));
    }

    /** The same frozen weights (shared, not copied) in a new model whose layers carry no adapter. */
    @Override
    public GptOssModel view() {
        return view(backend);
    }

    @Override
    public GptOssModel view(Backend other) {
        Layer[] ls = new Layer[layers.length];
        for (int i = 0; i < ls.length; i++) {
            Layer l = layers[i];
            ls[i] = new Layer(l.inputNorm(), l.postNorm(), l.attention().view(config), l.moe().view());
        }
        return new GptOssModel(config, other, embed, ls, finalNorm, lmHead.view(), rope);
    }

    public GptOssConfig config() {
        return config;
    }

    @Override
    public Backend backend() {
        return backend;
    }

    @Override
    public int vocabSize() {
        return config.vocab();
    }

    @Override
    public int layers() {
        return config.layers();
    }

    @Override
    public CacheGeometry cacheGeometry() {
        return new CacheGeometry(config.layers(), config.kvHeads(), config.headDim(), config.headDim());
    }

    @Override
    public KvCache newCache(int capacity) {
        return new KvCache(backend.allocator(), config.layers(), config.kvHeads(), config.headDim(), config.headDim(),
                capacity);
    }

    @Override
    public Tensor forward(List<Segment> batch, HiddenSink hidden) {
        return run(batch, hidden, null);
    }

    @Override
    public TrainTape forwardTrain(List<int[]> sequences, boolean recompute) {
        List<Segment> batch = new ArrayList<>();
        for (int[] s : sequences) {
            batch.add(new Segment(s, null));
        }
        TrainTape tape = new TrainTape(layers.length, recompute, batch);
        tape.logits = run(batch, null, tape);
        return tape;
    }

    /** Everything a training forward keeps for backward. */
    public static final class TrainTape implements Trainable.Tape {
        final boolean recompute;
        final List<Segment> batch;
        final int[] lengths;
        final Tensor[] layerInput;    // per layer [N, hidden]
        final LayerTape[] layerTapes; // per layer, null under recompute
        Tensor positions;             // i32 [N]
        Tensor finalInput;            // [N, hidden] before the final norm
        Tensor finalNormed;           // [N, hidden] the input of the LM head
        Tensor logits;                // [N, vocab]

        TrainTape(int layers, boolean recompute, List<Segment> batch) {
            this.recompute = recompute;
            this.batch = batch;
            this.lengths = batch.stream().mapToInt(s -> s.tokens().length).toArray();
            this.layerInput = new Tensor[layers];
            this.layerTapes = new LayerTape[layers];
        }

        @Override
        public Tensor logits() {
            return logits;
        }
    }

    /** One layer's saved activations. */
    static final class LayerTape {
        Tensor mid;      // [N, hidden] residual after attention
        final GptOssAttention.Tape attention = new GptOssAttention.Tape();
        final GptOssMoe.Tape moe = new GptOssMoe.Tape();
    }

    private Tensor run(List<Segment> batch, HiddenSink hidden, TrainTape tape) {
        Backend b = backend;
        TensorAllocator a = b.allocator();
        int n = 0;
        for (Segment s : batch) {
            n += s.tokens().length;
        }
        int[] ids = new int[n];
        int[] pos = new int[n];
        int k = 0;
        for (Segment s : batch) {
            int past = s.cache() == null ? 0 : s.cache().length();
            if (s.cache() != null) {
                s.cache().reserve(s.tokens().length);
            }
            for (int t = 0; t < s.tokens().length; t++) {
                if (past + t >= config.maxPositions()) {
                    throw new IllegalArgumentException("position " + (past + t) + " is beyond max_position_embeddings "
                            + config.maxPositions());
                }
                ids[k] = s.tokens()[t];
                pos[k++] = past + t;
            }
        }
        Tensor positions = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(pos, n)); // i32 [N]
        int h = config.hidden();
        Tensor x = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);      // [N, hidden] residual stream
        b.embedding(embed, a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(ids, n)), x);
        emit(hidden, 0, x);
        if (tape != null) {
            tape.positions = positions;
        }
        for (int i = 0; i < layers.length; i++) {
            LayerTape lt = null;
            if (tape != null) {
                tape.layerInput[i] = x;
                if (!tape.recompute) {
                    lt = new LayerTape();
                    tape.layerTapes[i] = lt;
                }
            }
            x = layerForward(i, x, positions, batch, lt);
            if (i + 1 < layers.length) {
                emit(hidden, i + 1, x);
            }
        }
        for (Segment s : batch) {
            if (s.cache() != null) {
                s.cache().advance(s.tokens().length);
            }
        }
        Tensor normed = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        b.rmsNorm(x, finalNorm, config.rmsEps(), normed);
        emit(hidden, layers.length, normed);
        if (tape != null) {
            tape.finalInput = x;
            tape.finalNormed = normed;
        }
        Tensor logits = a.allocate(MemoryCategory.LOGITS, DType.F32, n, config.vocab()); // [N, vocab]
        lmHead.forward(b, normed, logits);
        return logits;
    }

    /** One decoder layer: x [N, hidden] -> a new residual stream [N, hidden]. */
    private Tensor layerForward(int i, Tensor x, Tensor positions, List<Segment> batch, LayerTape lt) {
        Backend b = backend;
        TensorAllocator a = b.allocator();
        Layer l = layers[i];
        int n = x.size(0);
        int h = config.hidden();
        Tensor normed1 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        Tensor delta = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);   // [N, hidden]
        b.rmsNorm(x, l.inputNorm(), config.rmsEps(), normed1);
        l.attention().forward(b, normed1, positions, batch, rope, delta, lt == null ? null : lt.attention);
        Tensor mid = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);     // [N, hidden]
        b.add(x, delta, mid);
        Tensor normed2 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        b.rmsNorm(mid, l.postNorm(), config.rmsEps(), normed2);
        l.moe().forward(b, normed2, delta, lt == null ? null : lt.moe);
        Tensor out = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);     // [N, hidden]
        b.add(mid, delta, out);
        if (lt != null) {
            lt.mid = mid;
        }
        return out;
    }

    /**
     * Reverse pass from d loss / d logits [N, vocab]: activation gradients through every layer, and
     * parameter gradients for adapter tensors only (accumulated into the adapters' gradient buffers).
     */
    @Override
    public void backward(Trainable.Tape t, Tensor dLogits) {
        if (!(t instanceof TrainTape tape)) {
            throw new IllegalArgumentException("not a tape of this model: " + t);
        }
        Backend b = backend;
        TensorAllocator a = b.allocator();
        int n = dLogits.size(0);
        int h = config.hidden();
        Tensor dNormed = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        lmHead.backward(b, tape.finalNormed, dLogits, dNormed);
        Tensor dx = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);      // [N, hidden]
        b.rmsNormBackward(tape.finalInput, finalNorm, config.rmsEps(), dNormed, dx);
        for (int i = layers.length - 1; i >= 0; i--) {
            LayerTape lt = tape.layerTapes[i];
            if (lt == null) {
                lt = new LayerTape();
                layerForward(i, tape.layerInput[i], tape.positions, tape.batch, lt); // recompute
            }
            dx = layerBackward(i, lt, tape, dx);
        }
    }

    /** d residual-out [N, hidden] -> d residual-in [N, hidden]. */
    private Tensor layerBackward(int i, LayerTape lt, TrainTape tape, Tensor dOut) {
        Backend b = backend;
        TensorAllocator a = b.allocator();
        Layer l = layers[i];
        int n = dOut.size(0);
        int h = config.hidden();
        Tensor dNormed2 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        l.moe().backward(b, lt.moe, dOut, dNormed2);
        Tensor dMid = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);     // [N, hidden]
        b.rmsNormBackward(lt.mid, l.postNorm(), config.rmsEps(), dNormed2, dMid);
        b.add(dMid, dOut, dMid);
        Tensor dNormed1 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        l.attention().backward(b, lt.attention, tape.positions, tape.lengths, rope, dMid, dNormed1);
        Tensor dIn = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);      // [N, hidden]
        b.rmsNormBackward(tape.layerInput[i], l.inputNorm(), config.rmsEps(), dNormed1, dIn);
        b.add(dIn, dMid, dIn);
        return dIn;
    }

    private static void emit(HiddenSink sink, int index, Tensor t) {
        if (sink != null) {
            sink.accept(index, t);
        }
    }

    /** Attention projections, routers and the LM head, by Hugging Face module name. */
    @Override
    public Map<String, Linear> linearModules() {
        Map<String, Linear> out = new LinkedHashMap<>();
        for (Layer l : layers) {
            GptOssAttention at = l.attention();
            for (Linear lin : List.of(at.q, at.k, at.v, at.o, l.moe().router)) {
                out.put(lin.name(), lin);
            }
        }
        out.put(lmHead.name(), lmHead);
        return out;
    }

    /** Per layer the fused, row-interleaved gate_up [2I, hidden] and the down [hidden, I] of every expert. */
    @Override
    public List<ExpertSet> expertSets() {
        List<ExpertSet> out = new ArrayList<>();
        for (int i = 0; i < layers.length; i++) {
            GptOssMoe m = layers[i].moe();
            out.add(ExpertSet.interleavedGateUp("model.layers." + i + ".mlp.experts", List.of(m.gateUp),
                    List.of(m.down)));
        }
        return out;
    }
}
