package org.orbitrl.kernels.bench;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.cuda.CudaFusedDecode;
import org.orbitrl.kernels.cuda.MoeRouting;
import org.orbitrl.kernels.quant.Int4G32;
import org.orbitrl.kernels.quant.QuantizedTensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A random-initialised Qwen3-MoE-shaped decoder on the GPU, built from backend operations only, for
 * decode benchmarks and the graph-replay test: bf16 attention and router weights, INT4 g32 routed
 * experts (stacked per layer as [E·I, H] and [E·H, I]), f32 paged KV cache in the model's block
 * layout. Weights are made on the host for a few rows and replicated on the device (each layer and
 * each expert gets its own copy, so nothing is served from cache that would not be in the model).
 *
 * <p>One decode step ({@link #step}) for B sequences: embedding of the last token ids, per layer
 * rmsnorm, the fused q/k/v GEMM, q/k head norms + rope + cache append in one launch, paged decode
 * attention, o GEMM with the residual add folded in, rmsnorm, router (GEMM, softmax, normalised top-k in one
 * launch), routed experts (gate, up, SwiGLU, down;
 * per-pair GEMV at B = 1, device-grouped GEMV above), weighted combine into the residual; final
 * norm, lm_head, argmax into the token ids. With {@link #fused} (the default) the norms, the router's
 * selection, the SwiGLU and the combine ride inside the products (see {@link CudaFusedDecode}); at one sequence
 * the whole MLP (norm, router, experts, combine, residual) is one cooperative launch ({@link CudaFusedDecode#moeDecode}).
 * It issues stream work only, so it can be captured in
 * a CUDA graph; {@link #setPosition} (host to device copies) goes between steps.
 */
public final class MoeDecodeStack implements AutoCloseable {

    /** The shape of a Qwen3-MoE decoder. */
    public record Shape(int hidden, int layers, int heads, int kvHeads, int headDim, int expertWidth, int experts, int topk,
                        int vocab, float eps, double ropeTheta) {

        /** Reads a Hugging Face {@code config.json} of a Qwen3-MoE model. */
        public static Shape fromConfig(Path config) throws IOException {
            String s = Files.readString(config);
            return new Shape(intField(s, "hidden_size", config), intField(s, "num_hidden_layers", config),
                    intField(s, "num_attention_heads", config), intField(s, "num_key_value_heads", config),
                    intField(s, "head_dim", config), intField(s, "moe_intermediate_size", config), intField(s, "num_experts", config),
                    intField(s, "num_experts_per_tok", config), intField(s, "vocab_size", config),
                    (float) numField(s, "rms_norm_eps", config), numField(s, "rope_theta", config));
        }

        private static int intField(String json, String key, Path file) {
            return (int) numField(json, key, file);
        }

        private static double numField(String json, String key, Path file) {
            Matcher m = Pattern.compile("\"" + key + "\"\\s*:\\s*([-+0-9.eE]+)").matcher(json);
            if (!m.find()) {
                throw new IllegalArgumentException(file + ": no numeric field \"" + key + "\" (a Qwen3-MoE config is expected)");
            }
            return Double.parseDouble(m.group(1));
        }

        /** Bytes of the INT4 g32 weights of one expert (gate, up, down: codes and bf16 scales). */
        public long expertBytes() {
            long params = 3L * expertWidth * hidden;
            return params / 2 + params / 32 * 2;
        }

        /** Bytes of the bf16 weights every token reads per layer: attention and router (norms left out). */
        public long denseLayerBytes() {
            long q = (long) heads * headDim * hidden;
            long kv = 2L * kvHeads * headDim * hidden;
            long o = (long) hidden * heads * headDim;
            return 2 * (q + kv + o + (long) experts * hidden);
        }
    }

    private final CudaBackend gpu;
    private final Shape s;
    private final int batch;
    private final int blockSize;
    private final int maxBlocks;
    private final List<Tensor> owned = new ArrayList<>();
    private final RopeTable rope;
    private final AttentionSpec spec;
    private final MoeRouting routing;

    private final Tensor embed;     // bf16 [V, H]
    private final Tensor lmHead;    // bf16 [V, H]
    private final Tensor finalNorm; // f32 [H]
    private final Layer[] layers;

    // activations
    private final Tensor ids;       // i32 [B], the last token of each sequence
    private final Tensor x;         // f32 [B, H], residual stream
    private final Tensor h;         // f32 [B, H]
    private final Tensor qkv;       // f32 [B, (Hq + 2·Hkv)·D], the fused projection
    private final Tensor q;         // f32 [B, Hq, D]
    private final Tensor attn;      // f32 [B, Hq, D]
    private final Tensor topv;      // f32 [B, topk]
    private final Tensor topi;      // i32 [B, topk]
    private final Tensor gate;      // f32 [B·topk, I]
    private final Tensor up;        // f32 [B·topk, I]
    private final Tensor act;       // f32 [B·topk, I]
    private final Tensor actBf16;   // bf16 [B·topk, I]: the fused gate and up products' output
    private final Tensor down;      // f32 [B·topk, H]
    private final Tensor logits;    // f32 [B, V]
    private final Tensor positions; // i32 [B]
    private final Tensor lens;      // i32 [B]
    private final Tensor slots;     // i32 [B]
    private final Tensor tables;    // i32 [B, maxBlocks]

    private record Layer(Tensor attnNorm, Tensor qkvw, Tensor ow, Tensor qNorm, Tensor kNorm, Tensor postNorm,
                         Tensor router, QuantizedTensor gate, QuantizedTensor up, QuantizedTensor down, Tensor kCache, Tensor vCache) {
    }

    /**
     * @param maxContext positions each sequence can hold (rounded up to whole blocks of {@code blockSize})
     */
    public MoeDecodeStack(CudaBackend gpu, Shape shape, int batch, int maxContext, int blockSize, long seed) {
        this.gpu = gpu;
        this.s = shape;
        this.batch = batch;
        this.blockSize = blockSize;
        this.maxBlocks = (maxContext + blockSize - 1) / blockSize;
        SplittableRandom r = new SplittableRandom(seed);
        int hd = s.headDim();
        float[] inv = new float[hd / 2];
        for (int i = 0; i < inv.length; i++) {
            inv[i] = (float) Math.pow(s.ropeTheta(), -2.0 * i / hd);
        }
        this.rope = new RopeTable(inv, 1f, maxBlocks * blockSize, RopeTable.Style.HALF);
        this.spec = AttentionSpec.causal(hd);

        float wScale = (float) (1 / Math.sqrt(s.hidden()));
        this.embed = bf16(r, s.vocab(), s.hidden(), 1f);
        this.lmHead = bf16(r, s.vocab(), s.hidden(), wScale);
        this.finalNorm = norm(r, s.hidden());
        QuantizedTensor gateProto = gpu.toDevice(CudaBenchData.randomInt4(r, 8 * s.expertWidth(), s.hidden()));
        QuantizedTensor upProto = gpu.toDevice(CudaBenchData.randomInt4(r, 8 * s.expertWidth(), s.hidden()));
        QuantizedTensor downProto = gpu.toDevice(CudaBenchData.randomInt4(r, 8 * s.hidden(), s.expertWidth()));
        Tensor qkvProto = bf16(r, (long) (s.heads() + 2 * s.kvHeads()) * hd, s.hidden(), wScale); // q, k, v rows stacked
        Tensor oProto = bf16(r, s.hidden(), (long) s.heads() * hd, (float) (1 / Math.sqrt(s.heads() * hd)));
        Tensor routerProto = bf16(r, s.experts(), s.hidden(), 1f);
        this.layers = new Layer[s.layers()];
        long cacheRows = (long) batch * maxBlocks * blockSize;
        for (int l = 0; l < s.layers(); l++) {
            layers[l] = new Layer(norm(r, s.hidden()), copyOf(qkvProto), copyOf(oProto),
                    norm(r, hd), norm(r, hd), norm(r, s.hidden()), copyOf(routerProto),
                    replicate(gateProto, s.experts() / 8), replicate(upProto, s.experts() / 8), replicate(downProto, s.experts() / 8),
                    alloc(MemoryCategory.KV_CACHE, DType.F32, cacheRows, (long) s.kvHeads() * hd),
                    alloc(MemoryCategory.KV_CACHE, DType.F32, cacheRows, (long) s.kvHeads() * hd));
        }
        for (QuantizedTensor p : new QuantizedTensor[]{gateProto, upProto, downProto}) {
            gpu.free(p);
        }
        for (Tensor p : new Tensor[]{qkvProto, oProto, routerProto}) {
            owned.remove(p);
            gpu.free(p);
        }
        int pairs = batch * s.topk();
        this.routing = gpu.moe().moeRouting(s.experts(), pairs);
        this.ids = alloc(MemoryCategory.ACTIVATIONS, DType.I32, batch);
        this.x = alloc(MemoryCategory.ACTIVATIONS, DType.F32, batch, s.hidden());
        this.h = alloc(MemoryCategory.ACTIVATIONS, DType.F32, batch, s.hidden());
        this.qkv = alloc(MemoryCategory.ACTIVATIONS, DType.F32, batch, (long) (s.heads() + 2 * s.kvHeads()) * hd);
        this.q = alloc(MemoryCategory.ACTIVATIONS, DType.F32, batch, s.heads(), hd);
        this.attn = alloc(MemoryCategory.ACTIVATIONS, DType.F32, batch, s.heads(), hd);
        this.topv = alloc(MemoryCategory.ACTIVATIONS, DType.F32, batch, s.topk());
        this.topi = alloc(MemoryCategory.ACTIVATIONS, DType.I32, batch, s.topk());
        this.gate = alloc(MemoryCategory.ACTIVATIONS, DType.F32, pairs, s.expertWidth());
        this.up = alloc(MemoryCategory.ACTIVATIONS, DType.F32, pairs, s.expertWidth());
        this.act = alloc(MemoryCategory.ACTIVATIONS, DType.F32, pairs, s.expertWidth());
        this.actBf16 = alloc(MemoryCategory.ACTIVATIONS, DType.BF16, pairs, s.expertWidth());
        this.down = alloc(MemoryCategory.ACTIVATIONS, DType.F32, pairs, s.hidden());
        this.logits = alloc(MemoryCategory.LOGITS, DType.F32, batch, s.vocab());
        this.positions = alloc(MemoryCategory.ACTIVATIONS, DType.I32, batch);
        this.lens = alloc(MemoryCategory.ACTIVATIONS, DType.I32, batch);
        this.slots = alloc(MemoryCategory.ACTIVATIONS, DType.I32, batch);
        this.tables = alloc(MemoryCategory.ACTIVATIONS, DType.I32, batch, maxBlocks);
        int[] t = new int[batch * maxBlocks];
        for (int i = 0; i < t.length; i++) {
            t[i] = i; // sequence b owns blocks b·maxBlocks ..
        }
        gpu.copyToDevice(Tensor.ofInts(t, batch, maxBlocks), tables);
        int[] first = new int[batch];
        for (int b = 0; b < batch; b++) {
            first[b] = r.nextInt(s.vocab());
        }
        gpu.copyToDevice(Tensor.ofInts(first, batch), ids);
    }

    public Shape shape() {
        return s;
    }

    public int batch() {
        return batch;
    }

    /** Positions each sequence can hold. */
    public int capacity() {
        return maxBlocks * blockSize;
    }

    /** The token ids the last step produced (i32 [B], device). */
    public Tensor tokenIds() {
        return ids;
    }

    /** The logits of the last step (f32 [B, V], device). */
    public Tensor logits() {
        return logits;
    }

    /** The routed experts of the last layer of the last step (i32 [B, topk], device). */
    public Tensor lastRouting() {
        return topi;
    }

    /** Sets every sequence's current token to position {@code pos} (its cache then holds pos + 1 keys). */
    public void setPosition(int pos) {
        if (pos < 0 || pos >= capacity()) {
            throw new IllegalArgumentException("position " + pos + " outside the cache capacity " + capacity());
        }
        int[] p = new int[batch];
        int[] l = new int[batch];
        int[] sl = new int[batch];
        for (int b = 0; b < batch; b++) {
            p[b] = pos;
            l[b] = pos + 1;
            sl[b] = (b * maxBlocks + pos / blockSize) * blockSize + pos % blockSize;
        }
        gpu.copyToDevice(Tensor.ofInts(p, batch), positions);
        gpu.copyToDevice(Tensor.ofInts(l, batch), lens);
        gpu.copyToDevice(Tensor.ofInts(sl, batch), slots);
    }

    /** The parts of a decode step, for timing each by leaving it out of a captured step. */
    public enum Part {
        NORMS, QKV_PROJECTION, QKV_PREP, ATTENTION, O_PROJECTION, ROUTER, ROUTE, EXPERTS, SWIGLU, COMBINE, LM_HEAD
    }

    private java.util.Set<Part> skipped = java.util.EnumSet.noneOf(Part.class);

    /** Leaves {@code parts} out of the steps issued from now on (their outputs keep earlier values). */
    public void skip(java.util.Set<Part> parts) {
        this.skipped = parts.isEmpty() ? java.util.EnumSet.noneOf(Part.class) : java.util.EnumSet.copyOf(parts);
    }

    private boolean on(Part p) {
        return !skipped.contains(p);
    }

    private boolean fused = !"off".equals(System.getProperty("orbit.bench.fusedDecode"));

    /**
     * Whether steps take the fused decode operations ({@link org.orbitrl.kernels.cuda.CudaFusedDecode}): up to 4
     * sequences the norms folded into the q/k/v product and into the router with its selection, and at
     * one sequence the experts as two launches (gate, up and SwiGLU; down, combine and residual add). On
     * by default; {@code -Dorbit.bench.fusedDecode=off} starts with them off.
     */
    public void fused(boolean on) {
        this.fused = on;
    }

    public boolean fused() {
        return fused;
    }

    /** Issues one decode step (stream work only). */
    public void step() {
        int hd = s.headDim();
        float eps = s.eps();
        CudaFusedDecode fd = gpu.fusedDecode();
        boolean fusedNorm = fused && batch <= 4; // the norm GEMV and the ticketed router: measured faster up to a few tokens only
        boolean fusedExperts = fused && batch == 1;
        gpu.embedding(embed, ids, x);
        for (Layer L : layers) {
            if (fusedNorm) {
                if (on(Part.QKV_PROJECTION)) { // the attention's norm inside
                    fd.rmsNormMatmul(x, L.attnNorm, eps, L.qkvw, qkv, false);
                }
            } else {
                if (on(Part.NORMS)) {
                    gpu.rmsNorm(x, L.attnNorm, eps, h);
                }
                if (on(Part.QKV_PROJECTION)) {
                    gpu.matmul(h, L.qkvw, qkv);
                }
            }
            if (on(Part.QKV_PREP)) {
                gpu.qkvPrep(qkv, s.heads(), s.kvHeads(), hd, hd, L.qNorm, L.kNorm, eps, positions, rope, q, L.kCache, L.vCache, slots);
            }
            if (on(Part.ATTENTION)) {
                gpu.pagedDecodeAttention(q, L.kCache, L.vCache, tables, lens, blockSize, s.kvHeads(), attn, spec);
            }
            if (on(Part.O_PROJECTION)) {
                gpu.matmulAccumulate(attn.reshape(batch, (long) s.heads() * hd), L.ow, x); // o projection + residual
            }
            if (fusedExperts && on(Part.ROUTER) && on(Part.EXPERTS)) { // norm, router, experts, combine, residual: one op
                fd.moeDecode(x, L.postNorm, eps, L.router, s.topk(), true, L.gate, L.up, L.down, s.experts(), topv, topi);
                continue;
            }
            if (fusedNorm) {
                if (on(Part.ROUTER)) { // the MLP's norm inside; h written for the experts
                    fd.router().moeRouterNormTopk(x, L.postNorm, eps, L.router, s.topk(), true, h, topv, topi);
                }
            } else {
                if (on(Part.NORMS)) {
                    gpu.rmsNorm(x, L.postNorm, eps, h);
                }
                if (on(Part.ROUTER)) {
                    gpu.moe().moeRouterTopk(h, L.router, s.topk(), true, topv, topi);
                }
            }
            if (fusedExperts) {
                if (on(Part.EXPERTS)) { // SwiGLU inside the first launch, the combine and the residual add inside the second
                    fd.moeSwigluPairs(h, L.gate, L.up, s.experts(), topi, act);
                    fd.moeDownCombine(act, L.down, s.experts(), topi, topv, false, x, true);
                }
                continue;
            }
            if (batch == 1) {
                if (on(Part.EXPERTS)) {
                    gpu.moe().moeMatmulQuantized(h, L.gate, s.experts(), topi, gate);
                    gpu.moe().moeMatmulQuantized(h, L.up, s.experts(), topi, up);
                }
                if (on(Part.SWIGLU)) {
                    gpu.swiglu(gate, up, act);
                }
                if (on(Part.EXPERTS)) {
                    gpu.moe().moeMatmulQuantized(act, L.down, s.experts(), topi, down);
                }
            } else {
                if (on(Part.ROUTE)) {
                    gpu.moe().moeRoute(topi, routing);
                }
                if (gpu.moe().moeFusedDecode()) { // gate, up and the SwiGLU in one launch (the SWIGLU part is inside EXPERTS)
                    if (on(Part.EXPERTS)) {
                        gpu.moe().moeSwigluGrouped(h, L.gate, L.up, routing, actBf16);
                        gpu.moe().moeMatmulGrouped(actBf16, L.down, routing, down);
                    }
                } else {
                    if (on(Part.EXPERTS)) {
                        gpu.moe().moeMatmulGrouped(h, L.gate, routing, gate);
                        gpu.moe().moeMatmulGrouped(h, L.up, routing, up);
                    }
                    if (on(Part.SWIGLU)) {
                        gpu.swiglu(gate, up, act);
                    }
                    if (on(Part.EXPERTS)) {
                        gpu.moe().moeMatmulGrouped(act, L.down, routing, down);
                    }
                }
            }
            if (on(Part.COMBINE)) {
                gpu.moe().moeCombine(down, topv, false, x, true);
            }
        }
        if (on(Part.LM_HEAD)) {
            gpu.rmsNorm(x, finalNorm, eps, h);
            gpu.matmul(h, lmHead, logits);
            gpu.argmax(logits, ids);
        }
    }

    /**
     * Bytes one step must read from memory at least: every dense weight once, the distinct routed
     * experts' weights ({@code distinctExperts} summed over layers), the embedding rows, and the keys
     * and values of {@code contextLen} positions per sequence.
     */
    public long bytesPerStep(long distinctExperts, int contextLen) {
        long dense = s.layers() * s.denseLayerBytes() + 2L * s.vocab() * s.hidden() + (long) batch * s.hidden() * 2;
        long experts = distinctExperts * s.expertBytes();
        long kv = (long) batch * contextLen * s.layers() * s.kvHeads() * s.headDim() * 2 * 4;
        return dense + experts + kv;
    }

    private Tensor alloc(MemoryCategory c, DType dt, long... shape) {
        Tensor t = gpu.allocator().allocate(c, dt, shape);
        owned.add(t);
        return t;
    }

    private Tensor norm(SplittableRandom r, int n) {
        float[] w = new float[n];
        for (int i = 0; i < n; i++) {
            w[i] = (float) (0.8 + 0.4 * r.nextDouble());
        }
        Tensor t = alloc(MemoryCategory.BASE_WEIGHTS, DType.F32, n);
        gpu.copyToDevice(Tensor.of(w, n), t);
        return t;
    }

    /** bf16 [rows, cols] uniform in [-scale, scale): up to 4096 rows made on the host, the rest copied on the device. */
    private Tensor bf16(SplittableRandom r, long rows, long cols, float scale) {
        long protoRows = Math.min(rows, 4096);
        Tensor host = Tensor.allocate(Arena.ofAuto(), DType.BF16, protoRows, cols);
        MemorySegment seg = host.segment();
        for (long i = 0; i < protoRows * cols; i++) {
            float f = (float) ((r.nextDouble() * 2 - 1) * scale);
            seg.set(ValueLayout.JAVA_SHORT_UNALIGNED, 2 * i, (short) (Float.floatToRawIntBits(f) >>> 16));
        }
        Tensor t = alloc(MemoryCategory.BASE_WEIGHTS, DType.BF16, rows, cols);
        for (long r0 = 0; r0 < rows; r0 += protoRows) {
            long n = Math.min(protoRows, rows - r0);
            gpu.copyToDevice(host.slice(0, 0, n), t.slice(0, r0, r0 + n));
        }
        return t;
    }

    private Tensor copyOf(Tensor proto) {
        Tensor t = alloc(MemoryCategory.BASE_WEIGHTS, proto.dtype(), proto.shape());
        gpu.copy(proto, t);
        return t;
    }

    /** {@code times} stacked device copies of a device quantized matrix. */
    private QuantizedTensor replicate(QuantizedTensor p, int times) {
        Tensor codes = alloc(MemoryCategory.BASE_WEIGHTS, p.codes().dtype(), p.codes().dim(0) * times, p.codes().dim(1));
        Tensor scales = alloc(MemoryCategory.BASE_WEIGHTS, p.scales().dtype(), p.scales().dim(0) * times, p.scales().dim(1));
        for (int i = 0; i < times; i++) {
            gpu.copy(p.codes(), codes.slice(0, i * p.codes().dim(0), (i + 1) * p.codes().dim(0)));
            gpu.copy(p.scales(), scales.slice(0, i * p.scales().dim(0), (i + 1) * p.scales().dim(0)));
        }
        return new QuantizedTensor(Int4G32.INSTANCE, p.rows() * times, p.cols(), codes, scales);
    }

    @Override
    public void close() {
        gpu.synchronize();
        routing.close();
        for (Tensor t : owned) {
            gpu.free(t);
        }
        owned.clear();
    }
}
