package org.orbitrl.model.arch;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.DecodeStep;
import org.orbitrl.model.kv.PagedDecode;
import org.orbitrl.model.nn.Linear;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;

/**
 * The frame of a pre-norm decoder around its layers: the batch's new tokens flattened and placed
 * on the backend, the embedding, the layer loop (keeping what backward needs), the caches
 * advanced, the final RMSNorm and the LM head; and backward through the head, the norm and the
 * layers in reverse (re-running a layer's forward first under recompute). Also the residual wiring
 * of one layer: {@code mid = x + attention(norm1(x))}, {@code out = mid + block(norm2(mid))}.
 *
 * @param <L> the model's per-layer tape
 */
final class PreNormDecoder<L> {

    /**
     * Layer i: x [N, hidden] -> a new residual stream [N, hidden], filling {@code tape} when not null. {@code decode}: a
     * decode step's tables over the batch's paged pools ({@link PagedDecode#of}), or null. {@code training}: a forward
     * of a training step, with its tape or without (a layer that backward recomputes), whose results must not depend on
     * the batch's shape; false for inference and decode.
     */
    interface LayerForward<L> {
        Tensor apply(int i, Tensor x, Tensor positions, List<CausalLM.Segment> batch, PagedDecode decode, L tape,
                     boolean training);
    }

    /** Layer i backward: d out [N, hidden] -> d in [N, hidden]. */
    interface LayerBackward<L> {
        Tensor apply(int i, L layerTape, DecoderTape<L> tape, Tensor dOut);
    }

    /** A sublayer from its (normed) input [N, hidden] to its output [N, hidden]; or the reverse for gradients. */
    interface Sublayer {
        void apply(Tensor in, Tensor out);
    }

    /** The residual stream after attention, and the layer's output, both [N, hidden]. */
    record Residual(Tensor mid, Tensor out) {
    }

    private final Backend backend;
    private final int layers;
    private final int maxPositions;
    private final Tensor embed;       // [vocab, hidden]
    private final Tensor finalNorm;   // [hidden]
    private final float eps;
    private final Linear lmHead;      // [vocab, hidden]
    private final Supplier<L> newTape;
    private int keptLayers;           // under recompute, the last layers whose tapes the forward keeps
    private boolean offload;          // under recompute, the recomputed layers' inputs kept in host memory
    private final HostBuffers hostBuffers = new HostBuffers();   // their host tensors, from step to step

    PreNormDecoder(Backend backend, int layers, int maxPositions, Tensor embed, Tensor finalNorm, float eps, Linear lmHead,
                   Supplier<L> newTape) {
        this.backend = backend;
        this.layers = layers;
        this.maxPositions = maxPositions;
        this.embed = embed;
        this.finalNorm = finalNorm;
        this.eps = eps;
        this.lmHead = lmHead;
        this.newTape = newTape;
    }

    /** Logits [N, vocab] of the batch's new tokens; hidden states to {@code hidden}; fills {@code tape} when given. */
    Tensor forward(List<CausalLM.Segment> batch, CausalLM.HiddenSink hidden, DecoderTape<L> tape, LayerForward<L> layer) {
        return forward(batch, hidden, tape, layer, false);
    }

    /** As above; with {@code lastOnly} the logits of each segment's last new token alone, [segments, vocab]. */
    Tensor forward(List<CausalLM.Segment> batch, CausalLM.HiddenSink hidden, DecoderTape<L> tape, LayerForward<L> layer,
                   boolean lastOnly) {
        Backend b = backend;
        TensorAllocator a = b.allocator();
        int n = 0;
        for (CausalLM.Segment s : batch) {
            n += s.tokens().length;
        }
        int[] ids = new int[n];
        int[] pos = new int[n];
        int k = 0;
        for (CausalLM.Segment s : batch) {
            int past = s.cache() == null ? 0 : s.cache().length();
            if (s.cache() != null) {
                s.cache().reserve(s.tokens().length);
            }
            for (int t = 0; t < s.tokens().length; t++) {
                if (past + t >= maxPositions) {
                    throw new IllegalArgumentException("position " + (past + t) + " is beyond max_position_embeddings "
                            + maxPositions);
                }
                ids[k] = s.tokens()[t];
                pos[k++] = past + t;
            }
        }
        Tensor positions = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(pos, n)); // i32 [N]
        // a decode step over paged pools: one cache write and one attention a layer for the whole batch
        PagedDecode decode = tape == null ? PagedDecode.of(a, batch) : null;
        int h = embed.size(1);
        Tensor x = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h);           // [N, hidden] residual stream
        Tensor idsDev = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(ids, n));  // i32 [N]
        b.embedding(embed, idsDev, x);
        a.release(idsDev);
        emit(hidden, 0, x);
        if (tape != null) {
            tape.positions = positions;
            if (tape.recompute && offload) {
                tape.offloaded = new OffloadedInputs(layers, hostBuffers);
            }
        }
        for (int i = 0; i < layers; i++) {
            L lt = null;
            if (tape != null) {
                tape.layerInput[i] = x;
                if (!tape.recompute || i >= layers - keptLayers) {   // the last kept layers are not recomputed
                    lt = newTape.get();
                    tape.layerTapes.set(i, lt);
                }
            }
            Tensor in = x;
            x = layer.apply(i, x, positions, batch, decode, lt, tape != null);
            if (tape == null && hidden == null) {
                a.release(in);   // kept by neither a tape nor a sink
            }
            if (tape != null && tape.offloaded != null && lt == null) {
                tape.layerInput[i] = tape.offloaded.offload(a, i, in);   // the layer has run: its input waits on the host
            }
            if (i + 1 < layers) {
                emit(hidden, i + 1, x);
            }
        }
        if (decode != null) {
            decode.release(a);
        }
        for (CausalLM.Segment s : batch) {
            if (s.cache() != null) {
                s.cache().advance(s.tokens().length);
            }
        }
        Tensor normed = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h);      // [N, hidden]
        b.rmsNorm(x, finalNorm, eps, normed);
        emit(hidden, layers, normed);
        if (tape != null) {
            tape.finalInput = x;
            tape.finalNormed = normed;
        }
        Tensor headIn = normed;
        if (lastOnly && tape == null && n > batch.size()) {   // the sampled rows alone
            Tensor rows = a.upload(MemoryCategory.ACTIVATIONS, Tensor.ofInts(CausalLM.lastRows(batch), batch.size()));
            headIn = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, batch.size(), h);   // [segments, hidden]
            b.gatherRows(normed, rows, headIn);
            a.release(rows);
        }
        Tensor logits = a.allocateUninitialized(MemoryCategory.LOGITS, DType.F32, headIn.size(0), lmHead.out()); // [rows, vocab]
        lmHead.forward(b, headIn, logits);
        if (headIn != normed) {
            a.release(headIn);
        }
        if (tape == null) {
            a.release(positions);
        }
        if (tape == null && hidden == null) {
            a.release(x);
            a.release(normed);
        }
        return logits;
    }

    /**
     * The decode-step form of {@link #forward} ({@link CausalLM#decodeStep}): {@code batch} rows (padded) of one token
     * each over {@code pool} (and {@code windowPool}, where the sliding-window layers keep their rows; null: none),
     * the inputs in the step's fixed tensors, the device side the embedding, every layer with the step's tables, the
     * final norm and the head: backend work only, where the layers issue nothing else.
     */
    DecodeStep decodeStep(BlockPool pool, BlockPool windowPool, int batch, int maxBlocks, LayerForward<L> layer) {
        return new DecodeStep(backend, pool, windowPool, batch, maxBlocks, maxPositions, (ids, positions, paged) -> {
            TensorAllocator a = backend.allocator();
            int n = positions.size(0);
            int h = embed.size(1);
            Tensor x = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h);           // [N, hidden] residual stream
            backend.embedding(embed, ids, x);
            for (int i = 0; i < layers; i++) {
                Tensor in = x;
                x = layer.apply(i, x, positions, null, paged, null, false);
                a.release(in);
            }
            Tensor normed = a.allocateUninitialized(MemoryCategory.ACTIVATIONS, DType.F32, n, h);      // [N, hidden]
            backend.rmsNorm(x, finalNorm, eps, normed);
            a.release(x);
            Tensor logits = a.allocateUninitialized(MemoryCategory.LOGITS, DType.F32, n, lmHead.out()); // [N, vocab]
            lmHead.forward(backend, normed, logits);
            a.release(normed);
            return logits;
        });
    }

    /** Under recompute, the recomputed layers' inputs wait in host memory (see {@link Trainable#setOffloadedInputs}). */
    void setOffloadedInputs(boolean on) {
        offload = on;
    }

    /** Frees the host buffers the offloaded inputs kept for later steps. */
    void freeHostBuffers() {
        hostBuffers.free();
    }

    /** Under recompute, the last {@code n} layers keep their tapes from the forward (see {@link Trainable#setKeptLayers}). */
    void setKeptLayers(int n) {
        if (n < 0 || n > layers) {
            throw new IllegalArgumentException("kept layers must be between 0 and the model's " + layers + ", got " + n);
        }
        keptLayers = n;
    }

    /** The training forward over whole sequences (no cached past). */
    DecoderTape<L> forwardTrain(List<int[]> sequences, boolean recompute, LayerForward<L> layer) {
        List<CausalLM.Segment> batch = new ArrayList<>();
        for (int[] s : sequences) {
            batch.add(new CausalLM.Segment(s, null));
        }
        DecoderTape<L> tape = new DecoderTape<>(layers, recompute, batch);
        tape.logits = forward(batch, null, tape, layer);
        return tape;
    }

    /** A layer tape's release once its layer's backward has been issued. */
    interface LayerRelease<L> {
        void release(L tape, TensorAllocator a);
    }

    /** {@link #backward(Trainable.Tape, Tensor, LayerForward, LayerBackward, LayerRelease)} keeping every layer tape. */
    void backward(Trainable.Tape t, Tensor dLogits, LayerForward<L> forward, LayerBackward<L> layerBackward) {
        backward(t, dLogits, forward, layerBackward, null);
    }

    /**
     * Reverse pass from d loss / d logits [N, vocab] through the head, the final norm and every layer. With {@code release}
     * each layer's tape is released once that layer's backward is issued and dropped from the tape (a second backward
     * recomputes the layer from its kept input).
     */
    @SuppressWarnings("unchecked")
    void backward(Trainable.Tape t, Tensor dLogits, LayerForward<L> forward, LayerBackward<L> layerBackward, LayerRelease<L> release) {
        if (!(t instanceof DecoderTape<?> tape0)) {
            throw new IllegalArgumentException("not a tape of this model: " + t);
        }
        DecoderTape<L> tape = (DecoderTape<L>) tape0;
        if (tape.layerInput.length != layers) {
            throw new IllegalArgumentException("a tape of " + tape.layerInput.length + " layers for a model of " + layers);
        }
        Backend b = backend;
        TensorAllocator a = b.allocator();
        int n = dLogits.size(0);
        int h = embed.size(1);
        Tensor dNormed = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        lmHead.backward(b, tape.finalNormed, dLogits, dNormed);
        Tensor dx = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);      // [N, hidden]
        b.rmsNormBackward(tape.finalInput, finalNorm, eps, dNormed, dx);
        a.release(dNormed);
        for (int i = layers - 1; i >= 0; i--) {
            L lt = tape.layerTapes.get(i);
            boolean restored = tape.offloaded != null && tape.offloaded.has(i);
            if (restored) {
                tape.layerInput[i] = tape.offloaded.restore(a, i);
            }
            if (lt == null) {
                lt = newTape.get();
                a.release(forward.apply(i, tape.layerInput[i], tape.positions, tape.batch, null, lt, true)); // recompute; the tape keeps the output
            }
            Tensor dOut = dx;
            dx = layerBackward.apply(i, lt, tape, dx);
            a.release(dOut);
            if (release != null) {
                release.release(lt, a);
                tape.layerTapes.set(i, null);
            }
            if (restored) {   // back to waiting on the host only
                a.release(tape.layerInput[i]);
                tape.layerInput[i] = null;
            }
        }
        a.release(dx);   // the embedding's input gradient: the embedding does not train
    }

    /**
     * {@code mid = x + attention(norm1(x))}, {@code out = mid + block(norm2(mid))}; x [N, hidden]. {@code taped}: the
     * sublayers' tapes keep the normed inputs and the layer's tape keeps mid; else each is released at its last use
     * here, and the result's mid is null.
     */
    static Residual layer(Backend b, Tensor x, Tensor norm1, Tensor norm2, float eps, boolean taped, Sublayer attention,
                          Sublayer block) {
        TensorAllocator a = b.allocator();
        int n = x.size(0);
        int h = x.size(1);
        Tensor normed1 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        Tensor delta = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);   // [N, hidden]
        b.rmsNorm(x, norm1, eps, normed1);
        attention.apply(normed1, delta);
        Tensor mid = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);     // [N, hidden]
        b.add(x, delta, mid);
        Tensor normed2 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        b.rmsNorm(mid, norm2, eps, normed2);
        block.apply(normed2, delta);
        Tensor out = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);     // [N, hidden]
        b.add(mid, delta, out);
        a.release(delta);
        if (!taped) {
            a.release(normed1);
            a.release(normed2);
            a.release(mid);
            return new Residual(null, out);
        }
        return new Residual(mid, out);
    }

    /**
     * The reverse of {@link #layer}: d out [N, hidden] -> d x [N, hidden], given the layer input x
     * and mid; {@code block} and {@code attention} map their output gradient to their input gradient.
     */
    static Tensor layerBackward(Backend b, Tensor x, Tensor mid, Tensor norm1, Tensor norm2, float eps, Tensor dOut,
                                Sublayer block, Sublayer attention) {
        TensorAllocator a = b.allocator();
        int n = dOut.size(0);
        int h = dOut.size(1);
        Tensor dNormed2 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        block.apply(dOut, dNormed2);
        Tensor dMid = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);     // [N, hidden]
        b.rmsNormBackward(mid, norm2, eps, dNormed2, dMid);
        a.release(dNormed2);
        b.add(dMid, dOut, dMid);
        Tensor dNormed1 = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h); // [N, hidden]
        attention.apply(dMid, dNormed1);
        Tensor dIn = a.allocate(MemoryCategory.ACTIVATIONS, DType.F32, n, h);      // [N, hidden]
        b.rmsNormBackward(x, norm1, eps, dNormed1, dIn);
        a.release(dNormed1);
        b.add(dIn, dMid, dIn);
        a.release(dMid);
        return dIn;
    }

    private static void emit(CausalLM.HiddenSink sink, int index, Tensor t) {
        if (sink != null) {
            sink.accept(index, t);
        }
    }
}
