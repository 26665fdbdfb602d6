package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.WeightSource;
import org.orbitrl.model.spec.QuantizationConfig;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * DeepSeek-V3 ({@code deepseek_v3}) and Kimi-K2.x ({@code kimi_k2}, the text model of
 * {@code kimi_k25}): pre-norm decoder layers of multi-head latent attention and a dense SwiGLU MLP
 * (the first {@code first_k_dense_replace} layers) or a DeepSeek MoE block with shared experts,
 * a final RMSNorm and the LM head. The KV cache holds one latent and one rope key per token and
 * layer ({@link #cacheGeometry()}: one "head" of {@code kv_lora_rank + qk_rope_head_dim} whose
 * first {@code kv_lora_rank} channels are also the value).
 */
public final class DeepseekV3Model implements Trainable, AdapterTargets {

    private final DeepseekV3Config config;
    private final Backend backend;
    private final String prefix;       // "" or "language_model." (kimi_k25)
    private final Tensor embed;        // [vocab, hidden]
    private final Layer[] layers;
    private final Tensor finalNorm;    // [hidden]
    private final Linear lmHead;       // [vocab, hidden]
    private final RopeTable rope;
    private final PreNormDecoder<LayerTape> decoder;
    private int expertChunk;           // experts a dequantization chunk of the MoE layers' shared buffer (0: off)

    /** One decoder layer. */
    record Layer(Tensor inputNorm, Tensor postNorm, DeepseekV3Attention attention, DenseMlp mlp, DeepseekV3Moe moe) {
        Layer view(DeepseekV3Config c) {
            return new Layer(inputNorm, postNorm, attention.view(c), mlp == null ? null : mlp.view(),
                    moe == null ? null : moe.view());
        }
    }

    DeepseekV3Model(DeepseekV3Config config, Backend backend, String prefix, Tensor embed, Layer[] layers,
                    Tensor finalNorm, Linear lmHead, boolean interleavedRope) {
        this.config = config;
        this.backend = backend;
        this.prefix = prefix;
        this.embed = embed;
        this.layers = layers;
        this.finalNorm = finalNorm;
        this.lmHead = lmHead;
        this.rope = RopeTable.of(config.rope(), config.qkRope(), config.maxPositions(),
                interleavedRope ? RopeTable.Style.INTERLEAVED : RopeTable.Style.HALF);
        this.decoder = new PreNormDecoder<>(backend, layers.length, config.maxPositions(), embed, finalNorm, config.rmsEps(),
                lmHead, LayerTape::new);
        Tensor eye = DeepseekV3Attention.identity(backend.allocator(), config.kvLoraRank());   // [R, R], every layer's
        for (Layer l : layers) {
            l.attention().useIdentity(eye);
        }
    }

    /**
     * Builds the model from named weights (see {@link DeepseekV3Loader} for the checkpoint layouts),
     * checking every tensor's shape and that the source holds exactly the tensors the architecture needs.
     *
     * @param interleavedRope {@code rope_interleave}
     * @param quant           the checkpoint's {@code quantization_config}, or null
     */
    public static DeepseekV3Model load(DeepseekV3Config c, boolean interleavedRope, QuantizationConfig quant,
                                       WeightSource src, Backend backend, Qwen3Model.LoadOptions options) {
        return DeepseekV3Loader.load(c, interleavedRope, quant, src, backend, options);
    }

    /**
     * As above, this rank's share under {@code groups}: every MoE layer's routed experts split into contiguous blocks over
     * the expert-parallel group (tokens dispatched and combined by all-to-all, {@link ExpertDispatch}); attention, the
     * shared experts, dense layers, the embedding and the head whole on every rank. Tensor parallelism is refused.
     */
    public static DeepseekV3Model load(DeepseekV3Config c, boolean interleavedRope, QuantizationConfig quant,
                                       WeightSource src, Backend backend, Qwen3Model.LoadOptions options,
                                       org.orbitrl.model.parallel.RankGroups groups) {
        return DeepseekV3Loader.load(c, interleavedRope, quant, src, backend, options, groups);
    }

    @Override
    public DeepseekV3Model view() {
        return view(backend);
    }

    @Override
    public DeepseekV3Model view(Backend other) {
        Layer[] ls = new Layer[layers.length];
        for (int i = 0; i < ls.length; i++) {
            ls[i] = layers[i].view(config);
        }
        DeepseekV3Model v = new DeepseekV3Model(config, other, prefix, embed, ls, finalNorm, lmHead.view(),
                rope.style() == RopeTable.Style.INTERLEAVED);
        v.setExpertChunk(expertChunk);   // the view's own chunk buffer: it may run beside this model
        return v;
    }

    @Override
    public void setKeptLayers(int n) {
        decoder.setKeptLayers(n);
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

    /** Runs quantized routed experts through C-expert dequantization chunks (0: fused kernel). */
    @Override
    public void setExpertChunk(int c) {
        expertChunk = Math.max(0, c);
        ExpertChunker shared = c <= 0 ? null : new ExpertChunker(c);   // one buffer for every MoE layer of this model
        for (Layer l : layers) {
            if (l.moe() != null) {
                l.moe().useChunker(shared);
            }
        }
    }

    /**
     * Runs the routed experts grouped in backend memory (true, the default: routing, grouping, expert products and their
     * backward on the device) or per expert with the routing decision on the host (false).
     */
    public void setGroupedExperts(boolean on) {
        for (Layer l : layers) {
            if (l.moe() != null) {
                l.moe().setGrouped(on);
            }
        }
    }

    public DeepseekV3Config config() {
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

    /** One shared "KV head" of kv_lora_rank + qk_rope_head_dim; values are its first kv_lora_rank channels (vHeadDim 0). */
    @Override
    public CacheGeometry cacheGeometry() {
        return cacheGeometry(config);
    }

    /** The cache geometry of a model of shape {@code c}, without loading it (for sizing). */
    public static CacheGeometry cacheGeometry(DeepseekV3Config c) {
        return new CacheGeometry(c.layers(), 1, c.cacheWidth(), 0);
    }

    @Override
    public KvCache newCache(int capacity) {
        return new KvCache(backend.allocator(), config.layers(), 1, config.cacheWidth(), 0, capacity);
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
     * A decode step of {@code batch} rows over the latent pool whose inputs sit in fixed tensors
     * ({@link org.orbitrl.model.kv.DecodeStep}): each layer writes its entries and attends over the pool with one backend
     * call each; the MoE block grouped on the backend. Null under expert parallelism (its exchanges read the host).
     */
    @Override
    public org.orbitrl.model.kv.DecodeStep decodeStep(org.orbitrl.model.kv.BlockPool pool, org.orbitrl.model.kv.BlockPool windowPool,
                                                      int batch, int maxBlocks) {
        for (Layer l : layers) {
            if (l.moe() != null && l.moe().expertParallel()) {
                return null;
            }
        }
        return decoder.decodeStep(pool, windowPool, batch, maxBlocks, this::layerForward);
    }

    @Override
    public DecoderTape<LayerTape> forwardTrain(List<int[]> sequences, boolean recompute) {
        return decoder.forwardTrain(sequences, recompute, this::layerForward);
    }

    /** One layer's saved activations. */
    static final class LayerTape {
        Tensor mid;      // [N, hidden] residual after attention
        final DeepseekV3Attention.Tape attention = new DeepseekV3Attention.Tape();
        DenseMlp.Tape mlp;
        DeepseekV3Moe.Tape moe;

        /** Releases the layer's saved activations once its backward has been issued (the layer input is the caller's). */
        void release(TensorAllocator a) {
            if (mid != null) {
                a.release(mid);
            }
            mid = null;
            attention.release(a);
            Tensor normed2 = mlp != null ? mlp.x : moe == null ? null : moe.x != null ? moe.x : moe.grouped != null ? moe.grouped.x
                    : moe.sharedTape != null ? moe.sharedTape.x : null;   // the block's normed input, released once
            if (mlp != null) {
                mlp.release(a);
            }
            if (moe != null) {
                moe.release(a);
            }
            if (normed2 != null) {
                a.release(normed2);
            }
            mlp = null;
            moe = null;
        }
    }

    /** One decoder layer: x [N, hidden] -> a new residual stream [N, hidden]. */
    private Tensor layerForward(int i, Tensor x, Tensor positions, List<Segment> batch, org.orbitrl.model.kv.PagedDecode decode,
                                LayerTape lt, boolean training) {
        Backend b = backend;
        Layer l = layers[i];
        PreNormDecoder.Residual r = PreNormDecoder.layer(b, x, l.inputNorm(), l.postNorm(), config.rmsEps(), lt != null,
                (in, out) -> l.attention().forward(b, in, positions, batch, decode, rope, out, lt == null ? null : lt.attention),
                (in, out) -> {
                    if (l.moe() != null) {
                        DeepseekV3Moe.Tape mt = lt == null ? null : new DeepseekV3Moe.Tape();
                        l.moe().forward(b, in, out, mt, training);
                        if (lt != null) {
                            lt.moe = mt;
                        }
                    } else {
                        DenseMlp.Tape dt = lt == null ? null : new DenseMlp.Tape();
                        l.mlp().forward(b, in, out, dt);
                        if (lt != null) {
                            lt.mlp = dt;
                        }
                    }
                });
        if (lt != null) {
            lt.mid = r.mid();
        }
        return r.out();
    }

    @Override
    public void backward(Trainable.Tape t, Tensor dLogits) {
        decoder.backward(t, dLogits, this::layerForward, this::layerBackward, LayerTape::release);
    }

    /** d residual-out [N, hidden] -> d residual-in [N, hidden]. */
    private Tensor layerBackward(int i, LayerTape lt, DecoderTape<LayerTape> tape, Tensor dOut) {
        Backend b = backend;
        Layer l = layers[i];
        return PreNormDecoder.layerBackward(b, tape.layerInput[i], lt.mid, l.inputNorm(), l.postNorm(), config.rmsEps(), dOut,
                (d, dIn) -> {
                    if (l.moe() != null) {
                        l.moe().backward(b, lt.moe, d, dIn);
                    } else {
                        l.mlp().backward(b, lt.mlp, d, dIn);
                    }
                },
                (d, dIn) -> l.attention().backward(b, lt.attention, tape.positions, tape.lengths, rope, d, dIn));
    }

    @Override
    public Map<String, Linear> linearModules() {
        Map<String, Linear> out = new LinkedHashMap<>();
        for (Layer l : layers) {
            for (Linear lin : l.attention().linears()) {
                out.put(lin.name(), lin);
            }
            List<DenseMlp> mlps = new ArrayList<>();
            if (l.mlp() != null) {
                mlps.add(l.mlp());
            } else if (l.moe().shared != null) {
                mlps.add(l.moe().shared);
            }
            for (DenseMlp m : mlps) {
                for (Linear lin : List.of(m.gate, m.up, m.down)) {
                    out.put(lin.name(), lin);
                }
            }
        }
        out.put(lmHead.name(), lmHead);
        return out;
    }

    /**
     * Bytes of frozen base weights this rank holds: embedding, norms, the routers' score-correction biases, every linear's
     * weight and bias (a tied LM head counted once). Under expert parallelism only this rank's routed experts: what the
     * memory planner budgets as base weights per GPU.
     */
    @Override
    public long heldBaseBytes() {
        List<Tensor> tensors = new ArrayList<>(List.of(embed, finalNorm));
        List<Linear> linears = new ArrayList<>();
        for (Layer l : layers) {
            tensors.add(l.inputNorm());
            tensors.add(l.postNorm());
            tensors.add(l.attention().kvANorm);
            if (l.attention().qANorm != null) {
                tensors.add(l.attention().qANorm);
            }
            linears.addAll(l.attention().linears());
            List<DenseMlp> mlps = new ArrayList<>();
            if (l.mlp() != null) {
                mlps.add(l.mlp());
            } else {
                linears.add(l.moe().router);
                if (l.moe().bias != null) {
                    tensors.add(l.moe().bias);
                }
                if (l.moe().shared != null) {
                    mlps.add(l.moe().shared);
                }
                for (DenseMlp e : l.moe().experts) {   // null where another expert-parallel rank holds the expert
                    if (e != null) {
                        mlps.add(e);
                    }
                }
            }
            for (DenseMlp m : mlps) {
                linears.addAll(List.of(m.gate, m.up, m.down));
            }
        }
        linears.add(lmHead);
        return BaseBytes.of(tensors, linears);
    }

    @Override
    public List<ExpertSet> expertSets() {
        List<ExpertSet> out = new ArrayList<>();
        for (int i = 0; i < layers.length; i++) {
            DeepseekV3Moe m = layers[i].moe();
            if (m != null) {
                List<Linear> g = new ArrayList<>();
                List<Linear> u = new ArrayList<>();
                List<Linear> d = new ArrayList<>();
                for (DenseMlp e : m.experts) {   // null where another expert-parallel rank holds the expert
                    g.add(e == null ? null : e.gate);
                    u.add(e == null ? null : e.up);
                    d.add(e == null ? null : e.down);
                }
                out.add(new ExpertSet(prefix + "model.layers." + i + ".mlp.experts", g, u, d));
            }
        }
        return out;
    }
}
