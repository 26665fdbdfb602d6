package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.DecodeStep;
import org.orbitrl.model.kv.PagedDecode;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.model.nn.Linear;
import org.orbitrl.model.nn.Weight;
import org.orbitrl.model.nn.WeightSource;
import org.orbitrl.model.parallel.ParallelLayout;
import org.orbitrl.model.parallel.RankGroups;

import java.util.List;
import java.util.function.Function;

/**
 * Qwen3 ({@code qwen3}) and Qwen3-MoE ({@code qwen3_moe}): pre-norm decoder layers of Qwen3
 * attention and a dense SwiGLU MLP or a sparse MoE block, a final RMSNorm and the LM head.
 * Weights keep the Hugging Face names; bf16 base weights stay zero-copy views of the mapped
 * checkpoint, or routed experts are quantized on load.
 */
public final class Qwen3Model implements Trainable, AdapterTargets {

    /** How base weights are held. {@code expertQuantizer} null keeps experts in their checkpoint dtype. */
    public record LoadOptions(Function<Tensor, Weight> expertQuantizer) {
        public static LoadOptions full() {
            return new LoadOptions(null);
        }
    }

    private final DecoderConfig config;
    private final Backend backend;
    private final Tensor embed;       // [vocab, hidden]; under tensor parallelism this rank's [vocab/tp, hidden] rows
    private final Qwen3Layer[] layers;
    /** A decode step's ask after its last layer ({@link Backend#prefetchFrozen}): none, which clears what no launch carried. */
    private static final Tensor[] NO_ASKS = {};
    private final Tensor finalNorm;   // [hidden]
    private final Linear lmHead;      // [vocab, hidden]; under tensor parallelism [vocab/tp, hidden]
    private final RankGroups parallel; // null: the whole model on one rank
    private final Qwen3Layer.Shared shared;   // what every layer reads: the shape, the rope table, the groups
    private int keptLayers;            // under recompute, the last layers whose tapes the forward keeps
    private boolean offload;           // under recompute, the recomputed layers' inputs kept in host memory
    private final HostBuffers hostBuffers = new HostBuffers();   // their host tensors, from step to step
    private int expertChunk;           // experts a dequantization chunk of the MoE layers' shared buffer (0: off)

    Qwen3Model(DecoderConfig config, Backend backend, Tensor embed, Qwen3Layer[] layers, Tensor finalNorm,
                       Linear lmHead, RankGroups parallel) {
        this.parallel = parallel;
        this.config = config;
        this.backend = backend;
        this.embed = embed;
        this.layers = layers;
        this.finalNorm = finalNorm;
        this.lmHead = lmHead;
        this.shared = new Qwen3Layer.Shared(config,
                RopeTable.of(config.rope(), config.headDim(), config.maxPositions(), RopeTable.Style.HALF), parallel);
    }

    /**
     * Builds the model from named weights, checking every tensor's shape and that the source holds
     * exactly the tensors the architecture needs (missing and unexpected names are both errors).
     */
    public static Qwen3Model load(DecoderConfig c, WeightSource src, Backend backend, LoadOptions options) {
        return load(c, src, backend, options, null);
    }

    /**
     * This rank's share of the model under {@code groups}' {@link ParallelLayout}: attention heads
     * and the dense MLP split over the tensor-parallel group, routed experts over the expert-parallel
     * group (the experts other ranks own are neither loaded nor listed), the rest replicated.
     * {@code src} is the full checkpoint; {@code groups} null loads the whole model.
     */
    public static Qwen3Model load(DecoderConfig full, WeightSource fullSource, Backend backend, LoadOptions options,
                                  RankGroups groups) {
        return Qwen3Loader.load(full, fullSource, backend, options, groups);
    }

    /**
     * The same frozen weights (shared, not copied) in a new model whose layers carry no adapter:
     * rollout engines and the trainer each attach their own adapters to their own view.
     */
    @Override
    public Qwen3Model view() {
        return view(backend);
    }

    /** As {@link #view()}, running its operations on {@code other} (another thread pool or device). */
    @Override
    public Qwen3Model view(Backend other) {
        Qwen3Layer[] ls = new Qwen3Layer[layers.length];
        for (int i = 0; i < ls.length; i++) {
            ls[i] = layers[i].view(config);
        }
        Qwen3Model v = new Qwen3Model(config, other, embed, ls, finalNorm, lmHead.view(), parallel);
        v.setExpertChunk(expertChunk);   // the view's own chunk buffer: it may run beside this model
        return v;
    }

    /**
     * Runs quantized routed experts through active-expert-chunked dequantization with C experts per
     * chunk, forward and backward; 0 runs them on the fused dequantize-multiply kernel instead.
     */
    @Override
    public void setExpertChunk(int c) {
        expertChunk = Math.max(0, c);
        ExpertChunker chunker = c <= 0 ? null : new ExpertChunker(c);   // one buffer for every MoE layer of this model
        for (Qwen3Layer l : layers) {
            if (l.moe != null) {
                l.moe.useChunker(chunker);
            }
        }
    }

    @Override
    public void setOffloadedInputs(boolean on) {
        offload = on;
    }

    /** Frees the host buffers its offloaded inputs kept for later steps. */
    @Override
    public void close() {
        hostBuffers.free();
    }

    @Override
    public void setKeptLayers(int n) {
        if (n < 0 || n > layers.length) {
            throw new IllegalArgumentException("kept layers must be between 0 and the model's " + layers.length + ", got " + n);
        }
        keptLayers = n;
    }

    /**
     * Runs the sparse MoE blocks grouped by expert in backend memory (true, the default: routing,
     * grouping, expert products and their backward on the device) or per expert with the routing
     * decision on the host (false).
     */
    public void setGroupedExperts(boolean on) {
        for (Qwen3Layer l : layers) {
            if (l.moe != null) {
                l.moe.setGrouped(on);
            }
        }
    }

    @Override
    public int[] attentionWindows() {
        return config.windows().clone();
    }

    /** This rank's shape: under tensor parallelism, its share of the heads and the dense MLP. */
    public DecoderConfig config() {
        return config;
    }

    /** The communicators this rank's share runs with; null for a model on one rank. */
    public RankGroups parallel() {
        return parallel;
    }

    private boolean tensorParallel() {
        return shared.tensorParallel();
    }

    private boolean expertParallel() {
        return shared.expertParallel();
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

    /** Layer {@code i}'s weights and blocks. */
    Qwen3Layer layer(int i) {
        return layers[i];
    }

    @Override
    public CacheGeometry cacheGeometry() {
        return new CacheGeometry(config.layers(), config.kvHeads(), config.headDim(), config.headDim());
    }

    @Override
    public KvCache newCache(int capacity) {
        return new KvCache(backend.allocator(), config.layers(), config.kvHeads(), config.headDim(), config.headDim(), capacity);
    }

    @Override
    public Tensor forward(List<Segment> batch, HiddenSink hidden) {
        return run(batch, hidden, null, false);
    }

    @Override
    public Tensor forwardLast(List<Segment> batch) {
        return run(batch, null, null, true);
    }

    /**
     * Training forward over whole sequences (no cached past): returns the logits and what backward
     * needs. With {@code recompute}, only each layer's input is kept and backward re-runs the layer;
     * gradients are identical either way.
     */
    @Override
    public TrainTape forwardTrain(List<int[]> sequences, boolean recompute) {
        List<Segment> batch = new java.util.ArrayList<>();
        for (int[] s : sequences) {
            batch.add(new Segment(s, null));
        }
        TrainTape tape = new TrainTape(layers.length, recompute, batch);
        tape.logits = run(batch, null, tape, false);
        return tape;
    }

    /** Everything a training forward keeps for backward. */
    public static final class TrainTape implements Trainable.Tape {
        final boolean recompute;
        final List<Segment> batch;
        final int[] lengths;
        final Tensor[] layerInput;   // per layer [N, hidden]
        final Qwen3Layer.Tape[] layerTapes; // per layer, null under recompute
        Tensor positions;            // i32 [N]
        Tensor finalInput;           // [N, hidden] before the final norm
        Tensor finalNormed;          // [N, hidden] the input of the LM head
        Tensor logits;               // [N, vocab]
        OffloadedInputs offloaded;   // the recomputed layers' inputs in host memory, or null

        TrainTape(int layers, boolean recompute, List<Segment> batch) {
            this.recompute = recompute;
            this.batch = batch;
            this.lengths = batch.stream().mapToInt(s -> s.tokens().length).toArray();
            this.layerInput = new Tensor[layers];
            this.layerTapes = new Qwen3Layer.Tape[layers];
        }

        @Override
        public Tensor logits() {
            return logits;
        }

        @Override
        public void release(TensorAllocator a) {
            for (int i = 0; i < layerTapes.length; i++) {
                if (layerTapes[i] != null) {
                    layerTapes[i].release(a);
                    layerTapes[i] = null;
                }
            }
            for (Tensor t : layerInput) {
                if (t != null) {
                    a.release(t);
                }
            }
            java.util.Arrays.fill(layerInput, null);
            for (Tensor t : new Tensor[]{positions, finalInput, finalNormed, logits}) {
                if (t != null) {
                    a.release(t);
                }
            }
            positions = finalInput = finalNormed = logits = null;
            if (offloaded != null) {
                offloaded.release();
            }
        }
    }

    /** The batch's logits: of every new token, or with {@code lastOnly} of each segment's last ({@link #forwardLast}). */
    private Tensor run(List<Segment> batch, HiddenSink hidden, TrainTape tape, boolean lastOnly) {
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
        // a decode step over one paged pool without tensor parallelism: one cache write and attention per layer
        PagedDecode decode = tape == null && !tensorParallel() ? PagedDecode.of(a, batch) : null;
        Tensor idsDev = tensorParallel() ? null : a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(ids, n)); // i32 [N]
        Tensor last = lastOnly && n > batch.size()
                ? a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(CausalLM.lastRows(batch), batch.size())) : null;
        Tensor logits = body(idsDev, ids, positions, batch, decode, hidden, tape, last);
        if (decode != null) {
            decode.release(a);
        }
        if (idsDev != null) {
            a.release(idsDev);
        }
        if (last != null) {
            a.release(last);
        }
        for (Segment s : batch) {
            if (s.cache() != null) {
                s.cache().advance(s.tokens().length);
            }
        }
        return logits;
    }

    /**
     * A decode step of {@code batch} rows over {@code pool} whose inputs sit in fixed tensors
     * ({@link DecodeStep}); null under tensor or expert parallelism (their exchanges read the host).
     */
    @Override
    public DecodeStep decodeStep(BlockPool pool, BlockPool windowPool, int batch, int maxBlocks) {
        if (tensorParallel() || expertParallel()) {
            return null;
        }
        return new DecodeStep(backend, pool, windowPool, batch, maxBlocks, config.maxPositions(),
                (ids, positions, paged) -> body(ids, null, positions, null, paged, null, null, null));
    }

    /**
     * Everything after the inputs are on the backend: embedding of idsDev i32 [N] (or, under tensor
     * parallelism, of the host ids), the layers, the final norm and the LM head; logits [N, vocab].
     * Issues backend work only (no upload, no host read) unless a layer's own kernels need one. With {@code lastRows}
     * (i32 [rows]) the LM head runs over those rows of the final norm alone: logits [rows, vocab].
     */
    private Tensor body(Tensor idsDev, int[] ids, Tensor positions, List<Segment> batch, PagedDecode decode, HiddenSink hidden,
                        TrainTape tape, Tensor lastRows) {
        Backend b = backend;
        TensorAllocator a = b.allocator();
        int n = positions.size(0);
        int h = config.hidden();
        Tensor x = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden] residual stream: the embedding writes it
        if (tensorParallel()) {
            VocabParallel.embed(b, parallel.tp(), embed, ids, x);
        } else {
            b.embedding(embed, idsDev, x);
        }
        emit(hidden, 0, x);
        if (tape != null) {
            tape.positions = positions;
            if (tape.recompute && offload) {
                tape.offloaded = new OffloadedInputs(layers.length, hostBuffers);
            }
        }
        for (int i = 0; i < layers.length; i++) {
            Qwen3Layer.Tape lt = null;
            if (tape != null) {
                tape.layerInput[i] = x;
                if (!tape.recompute || i >= layers.length - keptLayers) {   // the last kept layers are not recomputed
                    lt = new Qwen3Layer.Tape();
                    tape.layerTapes[i] = lt;
                }
            }
            Tensor in = x;
            // a decode step's asks of the device's cache: the next layer's q/k/v (none after the last: clears the asks)
            Tensor[] ahead = decode == null ? null : i + 1 < layers.length ? layers[i + 1].attention.frozenQkv() : NO_ASKS;
            x = layers[i].forward(b, shared, i, x, positions, batch, lt, decode, tape != null, ahead);
            if (tape == null && hidden == null) {
                a.release(in);   // kept by neither a tape nor a sink
            }
            if (tape != null && tape.offloaded != null && lt == null) {
                tape.layerInput[i] = tape.offloaded.offload(a, i, in);   // the layer has run: its input waits on the host
            }
            if (i + 1 < layers.length) {
                emit(hidden, i + 1, x);
            }
        }
        Tensor normed = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        b.rmsNorm(x, finalNorm, config.rmsEps(), normed);
        emit(hidden, layers.length, normed);
        if (tape != null) {
            tape.finalInput = x;
            tape.finalNormed = normed;
        } else {
            a.release(positions);
            if (hidden == null) {
                a.release(x);
            }
        }
        Tensor headIn = normed;
        if (lastRows != null) {   // the sampled rows alone
            headIn = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, lastRows.size(0), h);   // [rows, hidden]
            b.gatherRows(normed, lastRows, headIn);
        }
        int rows = headIn.size(0);
        Tensor logits = a.allocateUninitialized(MemoryCategory.LOGITS, DType.F32, rows, config.vocab()); // [rows, vocab]
        if (tensorParallel()) {
            Tensor block = a.allocateUninitialized(MemoryCategory.LOGITS, DType.F32, rows, lmHead.out()); // [rows, vocab/tp]
            lmHead.forward(b, headIn, block);
            VocabParallel.gatherLogits(b, parallel.tp(), block, logits);
            a.release(block);
        } else {
            lmHead.forward(b, headIn, logits);
        }
        if (headIn != normed) {
            a.release(headIn);
        }
        if (tape == null && hidden == null) {
            a.release(normed);
        }
        return logits;
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
        if (tensorParallel()) {
            Tensor block = VocabParallel.block(b, dLogits, parallel.tp(), lmHead.out());   // [N, vocab/tp]
            lmHead.backward(b, tape.finalNormed, block, dNormed);
            a.release(block);
            parallel.tp().allReduceSum(dNormed);   // each vocabulary block's share of the head's input gradient
        } else {
            lmHead.backward(b, tape.finalNormed, dLogits, dNormed);
        }
        Tensor dx = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);      // [N, hidden]
        b.rmsNormBackward(tape.finalInput, finalNorm, config.rmsEps(), dNormed, dx);
        a.release(dNormed);
        for (int i = layers.length - 1; i >= 0; i--) {
            Qwen3Layer.Tape lt = tape.layerTapes[i];
            boolean restored = tape.offloaded != null && tape.offloaded.has(i);
            if (restored) {
                tape.layerInput[i] = tape.offloaded.restore(a, i);
            }
            if (lt == null) {
                lt = new Qwen3Layer.Tape();
                Tensor out = layers[i].forward(b, shared, i, tape.layerInput[i], tape.positions, tape.batch, lt, null, true, null); // recompute
                a.release(out);   // the tape keeps the original output as the next layer's input
            }
            Tensor dOut = dx;
            dx = layers[i].backward(b, shared, lt, tape.layerInput[i], tape.positions, tape.lengths, dOut);
            a.release(dOut);
            lt.release(a);
            tape.layerTapes[i] = null;   // a second backward recomputes the layer from its kept input
            if (restored) {   // back to waiting on the host only
                a.release(tape.layerInput[i]);
                tape.layerInput[i] = null;
            }
        }
        a.release(dx);   // the embedding's input gradient: the embedding does not train
    }

    private static void emit(HiddenSink sink, int index, Tensor t) {
        if (sink != null) {
            sink.accept(index, t);
        }
    }

    @Override
    public java.util.Map<String, Linear> linearModules() {
        java.util.Map<String, Linear> out = new java.util.LinkedHashMap<>();
        for (Qwen3Layer l : layers) {
            for (Linear lin : List.of(l.attention.q, l.attention.k, l.attention.v, l.attention.o)) {
                out.put(lin.name(), lin);
            }
            if (l.mlp != null) {
                for (Linear lin : List.of(l.mlp.gate, l.mlp.up, l.mlp.down)) {
                    out.put(lin.name(), lin);
                }
            } else {
                out.put(l.moe.router.name(), l.moe.router);
            }
        }
        out.put(lmHead.name(), lmHead);
        return out;
    }

    @Override
    public List<ExpertSet> expertSets() {
        List<ExpertSet> out = new java.util.ArrayList<>();
        for (int i = 0; i < layers.length; i++) {
            SparseMoe m = layers[i].moe;
            if (m != null) {
                List<Linear> g = new java.util.ArrayList<>();
                List<Linear> u = new java.util.ArrayList<>();
                List<Linear> d = new java.util.ArrayList<>();
                for (DenseMlp e : m.experts) {   // null where another expert-parallel rank holds the expert
                    g.add(e == null ? null : e.gate);
                    u.add(e == null ? null : e.up);
                    d.add(e == null ? null : e.down);
                }
                out.add(new ExpertSet("model.layers." + i + ".mlp.experts", g, u, d));
            }
        }
        return out;
    }

    /**
     * Bytes of frozen base weights this rank holds: embedding, norms, every linear's weight and bias
     * (a tied LM head counted once). Under a parallel layout, only this rank's share: what the
     * memory planner budgets as base weights per GPU.
     */
    @Override
    public long heldBaseBytes() {
        List<Tensor> tensors = new java.util.ArrayList<>(List.of(embed, finalNorm));
        for (Qwen3Layer l : layers) {
            tensors.addAll(List.of(l.inputNorm, l.postNorm, l.attention.qNorm, l.attention.kNorm));
        }
        return BaseBytes.of(tensors, linears());
    }

    /** Every linear layer of the model, attention and MLP/experts, with its Hugging Face module name. */
    public List<Linear> linears() {
        List<Linear> out = new java.util.ArrayList<>();
        for (Qwen3Layer l : layers) {
            out.addAll(List.of(l.attention.q, l.attention.k, l.attention.v, l.attention.o));
            if (l.mlp != null) {
                out.addAll(List.of(l.mlp.gate, l.mlp.up, l.mlp.down));
            } else {
                out.add(l.moe.router);
                for (DenseMlp e : l.moe.experts) {
                    if (e != null) {
                        out.addAll(List.of(e.gate, e.up, e.down));
                    }
                }
            }
        }
        out.add(lmHead);
        return out;
    }
}
