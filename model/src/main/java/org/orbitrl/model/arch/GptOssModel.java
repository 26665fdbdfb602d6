package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.kv.PagedDecode;
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
    private final PreNormDecoder<LayerTape> decoder;
    private int expertChunk;

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
        this.decoder = new PreNormDecoder<>(backend, layers.length, config.maxPositions(), embed, finalNorm, config.rmsEps(),
                lmHead, LayerTape::new);
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
            GptOssExpertLoader.Experts experts = GptOssExpertLoader.load(w, c, p + "mlp.experts", options.expertQuantizer())
                    .placed(place);
            GptOssMoe moe = new GptOssMoe(linear(w, place, p + "mlp.router", c.experts(), h, true), experts.gateUp(),
                    experts.down(), c.topK(), c.swigluAlpha(), c.swigluLimit(), experts.gateUpBias(), experts.downBias());
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
        GptOssModel v = new GptOssModel(config, other, embed, ls, finalNorm, lmHead.view(), rope);
        v.expertChunk = expertChunk;
        return v;
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
    public int[] attentionWindows() {
        int[] w = new int[config.layers()];
        for (int i = 0; i < w.length; i++) {
            w[i] = config.isSliding(i) ? config.slidingWindow() : 0;
        }
        return w;
    }

    @Override
    public KvCache newCache(int capacity) {
        return new KvCache(backend.allocator(), config.layers(), config.kvHeads(), config.headDim(), config.headDim(),
                capacity);
    }

    @Override
    public Tensor forward(List<Segment> batch, HiddenSink hidden) {
        return decoder.forward(batch, hidden, null, this::layerForward);
    }

    @Override
    public Tensor forwardLast(List<Segment> batch) {
        return decoder.forward(batch, null, null, this::layerForward, true);
    }

    /**
     * A decode step of {@code batch} rows over the engine's pools whose inputs sit in fixed tensors
     * ({@link org.orbitrl.model.kv.DecodeStep}): the attention's rope, cache writes and paged attention, and the MoE
     * block grouped on the backend (its per-expert form reads the host, so a step with it cannot be captured).
     */
    @Override
    public org.orbitrl.model.kv.DecodeStep decodeStep(org.orbitrl.model.kv.BlockPool pool, org.orbitrl.model.kv.BlockPool windowPool,
                                                      int batch, int maxBlocks) {
        return decoder.decodeStep(pool, windowPool, batch, maxBlocks, this::layerForward);
    }

    @Override
    public DecoderTape<LayerTape> forwardTrain(List<int[]> sequences, boolean recompute) {
        return decoder.forwardTrain(sequences, recompute, this::layerForward);
    }

    @Override
    public void setKeptLayers(int n) {
        decoder.setKeptLayers(n);
    }

    /** Quantized routed experts dequantized {@code c} at a time in the grouped expert products (0: the fused kernels). */
    @Override
    public void setExpertChunk(int c) {
        expertChunk = Math.max(0, c);
        for (Layer l : layers) {
            l.moe().setExpertChunk(c);
        }
    }

    /**
     * Runs the routed experts grouped in backend memory (true, the default: routing, grouping, expert products, biases
     * and their backward on the backend) or per expert with the routing decision on the host (false).
     */
    public void setGroupedExperts(boolean on) {
        for (Layer l : layers) {
            l.moe().setGrouped(on);
        }
    }

    @Override
    public void setOffloadedInputs(boolean on) {
        decoder.setOffloadedInputs(on);
    }

    /** Frees the host buffers its offloaded inputs kept for later steps. */
    @Override
    public void close() {
        decoder.freeHostBuffers();
    }

    /** One layer's saved activations. */
    static final class LayerTape {
        Tensor mid;      // [N, hidden] residual after attention
        final GptOssAttention.Tape attention = new GptOssAttention.Tape();
        final GptOssMoe.Tape moe = new GptOssMoe.Tape();

        /** Releases the layer's saved activations once its backward has been issued (the layer input is the caller's). */
        void release(TensorAllocator a) {
            GptOssAttention.Tape at = attention;
            for (Tensor t : new Tensor[]{mid, at.x, at.q3, at.k3, at.v3, at.attn, at.lse, moe.x}) {
                if (t != null) {
                    a.release(t);
                }
            }
            mid = null;
            at.x = at.q3 = at.k3 = at.v3 = at.attn = at.lse = null;
            moe.release(a);
        }
    }

    /** One decoder layer: x [N, hidden] -> a new residual stream [N, hidden]. */
    private Tensor layerForward(int i, Tensor x, Tensor positions, List<Segment> batch, PagedDecode decode, LayerTape lt,
                                boolean training) {
        Backend b = backend;
        Layer l = layers[i];
        PreNormDecoder.Residual r = PreNormDecoder.layer(b, x, l.inputNorm(), l.postNorm(), config.rmsEps(), lt != null,
                (in, out) -> l.attention().forward(b, in, positions, batch, rope, out, lt == null ? null : lt.attention, decode),
                (in, out) -> l.moe().forward(b, in, out, lt == null ? null : lt.moe, training));
        if (lt != null) {
            lt.mid = r.mid();
        }
        return r.out();
    }

    /**
     * Reverse pass from d loss / d logits [N, vocab]: activation gradients through every layer, and
     * parameter gradients for adapter tensors only (accumulated into the adapters' gradient buffers).
     */
    @Override
    public void backward(Trainable.Tape t, Tensor dLogits) {
        decoder.backward(t, dLogits, this::layerForward, this::layerBackward, LayerTape::release);
    }

    /** d residual-out [N, hidden] -> d residual-in [N, hidden]. */
    private Tensor layerBackward(int i, LayerTape lt, DecoderTape<LayerTape> tape, Tensor dOut) {
        Backend b = backend;
        Layer l = layers[i];
        return PreNormDecoder.layerBackward(b, tape.layerInput[i], lt.mid, l.inputNorm(), l.postNorm(), config.rmsEps(), dOut,
                (d, dIn) -> l.moe().backward(b, lt.moe, d, dIn),
                (d, dIn) -> l.attention().backward(b, lt.attention, tape.positions, tape.lengths, rope, d, dIn));
    }

    /**
     * Bytes of frozen base weights this model holds: embedding, norms, attention sinks (f32, as attention reads them),
     * every linear's weight and bias, experts included (a tied LM head counted once): what the memory planner budgets
     * as base weights per GPU.
     */
    @Override
    public long heldBaseBytes() {
        List<Tensor> tensors = new ArrayList<>(List.of(embed, finalNorm));
        List<Linear> linears = new ArrayList<>(linearModules().values());
        for (Layer l : layers) {
            tensors.addAll(List.of(l.inputNorm(), l.postNorm(), l.attention().sinks));
            linears.addAll(List.of(l.moe().gateUp));
            linears.addAll(List.of(l.moe().down));
        }
        return BaseBytes.of(tensors, linears);
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
