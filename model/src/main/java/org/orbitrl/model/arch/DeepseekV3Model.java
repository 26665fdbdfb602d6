package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
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
        return new DeepseekV3Model(config, other, prefix, embed, ls, finalNorm, lmHead.view(),
                rope.style() == RopeTable.Style.INTERLEAVED);
    }

    /** Runs quantized routed experts through C-expert dequantization chunks (0: fused kernel). */
    public void setExpertChunk(int c) {
        for (Layer l : layers) {
            if (l.moe() != null) {
                l.moe().setExpertChunk(c);
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
        final Tensor[] layerInput;     // per layer [N, hidden]
        final LayerTape[] layerTapes;  // per layer, null under recompute
        Tensor positions;              // i32 [N]
        Tensor finalInput;             // [N, hidden]
        Tensor finalNormed;            // [N, hidden]
        Tensor logits;                 // [N, vocab]

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
        final DeepseekV3Attention.Tape attention = new DeepseekV3Attention.Tape();
        DenseMlp.Tape mlp;
        DeepseekV3Moe.Tape moe;
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
                ids[k] = s.tokens()[t];
                pos[k++] = past + t;
                if (past + t >= config.maxPositions()) {
                    throw new IllegalArgumentException("position " + (past + t) + " is beyond max_position_embeddings "
                            + config.maxPositions());
                }
            }
        }
        Tensor positions = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(pos, n)); // i32 [N]
        int h = config.hidden();
        Tensor x = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);      // [N, hidden]
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
        if (l.moe() != null) {
            DeepseekV3Moe.Tape mt = lt == null ? null : new DeepseekV3Moe.Tape();
            l.moe().forward(b, normed2, delta, mt);
            if (lt != null) {
                lt.moe = mt;
            }
        } else {
            DenseMlp.Tape dt = lt == null ? null : new DenseMlp.Tape();
            l.mlp().forward(b, normed2, delta, dt);
            if (lt != null) {
                lt.mlp = dt;
            }
        }
        Tensor out = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);     // [N, hidden]
        b.add(mid, delta, out);
        if (lt != null) {
            lt.mid = mid;
        }
        return out;
    }

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
                layerForward(i, tape.layerInput[i], tape.positions, tape.batch, lt);
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
        if (l.moe() != null) {
            l.moe().backward(b, lt.moe, dOut, dNormed2);
        } else {
            l.mlp().backward(b, lt.mlp, dOut, dNormed2);
        }
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

    @Override
    public List<ExpertSet> expertSets() {
        List<ExpertSet> out = new ArrayList<>();
        for (int i = 0; i < layers.length; i++) {
            DeepseekV3Moe m = layers[i].moe();
            if (m != null) {
                List<Linear> g = new ArrayList<>();
                List<Linear> u = new ArrayList<>();
                List<Linear> d = new ArrayList<>();
                for (DenseMlp e : m.experts) {
                    g.add(e.gate);
                    u.add(e.up);
                    d.add(e.down);
                }
                out.add(new ExpertSet(prefix + "model.layers." + i + ".mlp.experts", g, u, d));
            }
        }
        return out;
    }
}
