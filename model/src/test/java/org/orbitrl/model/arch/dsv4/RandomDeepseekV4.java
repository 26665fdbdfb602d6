package org.orbitrl.model.arch.dsv4;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.nn.WeightSource;
import org.orbitrl.model.spec.AttentionKind;
import org.orbitrl.model.spec.DeepseekV4Spec;
import org.orbitrl.model.spec.MlpKind;
import org.orbitrl.model.spec.ModelSpec;

import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;
import java.util.SplittableRandom;
import java.util.stream.IntStream;

/**
 * The weights of a DeepSeek V4 model of any shape in the layout of the deepseek_v4 fixture (its native module names),
 * generated when the loader asks for each tensor (seeded by name): linears, sinks and the hyper-connections' parameters
 * bf16 uniform with standard deviation 0.02, norms and the hyper-connections' scales 1, every routed expert directly as
 * MXFP4 (random E2M1 codes, E8M0 scale 2^-8: about 0.02 standard deviation), the hash layers' table random experts.
 * With {@code fp8}, the linears the released checkpoints hold in FP8 (the attention's wq_a, wq_b, wkv, wo_a, wo_b, the
 * indexer's wq_b, the shared experts) are FP8 E4M3 with E8M0 128×128 block scales as DeepSeek stores them (random codes
 * of magnitude 2^-6 to 3.75, scale 2^-7: at most about 0.03).
 */
final class RandomDeepseekV4 implements WeightSource {
    private static final double HALF_WIDTH = 0.02 * Math.sqrt(3);

    private enum Kind { ONES, RANDOM, CODES, SCALES, TABLE, FP8, FP8_SCALES }

    private record Entry(Kind kind, DType dtype, long[] shape) {
    }

    private final Map<String, Entry> entries = new HashMap<>();
    private final long seed;
    private final int experts;
    private final boolean fp8;

    RandomDeepseekV4(ModelSpec s, long seed) {
        this(s, seed, false);
    }

    RandomDeepseekV4(ModelSpec s, long seed, boolean fp8) {
        this.seed = seed;
        this.fp8 = fp8;
        DeepseekV4Spec v = s.deepseekV4();
        long h = s.hiddenSize();
        long d = s.headDim();
        long nh = s.numHeads();
        long hc = v.hcMult();
        long mixes = (2 + hc) * hc;
        this.experts = s.moe().numExperts();
        long inter = s.moe().moeIntermediateSize();
        random("model.embed_tokens.weight", s.vocabSize(), h);
        random("head.weight", s.vocabSize(), h);
        ones("model.norm.weight", h);
        random("model.hc_head.hc_base", hc);
        random("model.hc_head.hc_fn", hc, hc * h);
        ones("model.hc_head.hc_scale", 1);
        for (int l = 0; l < s.numLayers(); l++) {
            String p = "model.layers." + l + ".";
            AttentionKind kind = s.attentionKind(l);
            random(p + "attn.attn_sink", nh);
            ones(p + "attn.norm.weight", d);
            ones(p + "attn.q_norm.weight", v.qLoraRank());
            linear(p + "attn.wq_a", v.qLoraRank(), h);
            linear(p + "attn.wq_b", nh * d, v.qLoraRank());
            linear(p + "attn.wkv", d, h);
            linear(p + "attn.wo_a", (long) v.oGroups() * v.oLoraRank(), nh * d / v.oGroups());
            linear(p + "attn.wo_b", h, (long) v.oGroups() * v.oLoraRank());
            if (kind.isCompressed()) {
                long width = kind == AttentionKind.COMPRESSED_SPARSE ? 2 * d : d;
                long rate = v.compressRate(kind);
                random(p + "attn.compressor.ape", rate, width);
                ones(p + "attn.compressor.norm.weight", d);
                random(p + "attn.compressor.wkv.weight", width, h);
                random(p + "attn.compressor.wgate.weight", width, h);
                if (kind == AttentionKind.COMPRESSED_SPARSE) {
                    long ihd = v.indexHeadDim();
                    random(p + "attn.indexer.compressor.ape", rate, 2 * ihd);
                    ones(p + "attn.indexer.compressor.norm.weight", ihd);
                    random(p + "attn.indexer.compressor.wkv.weight", 2 * ihd, h);
                    random(p + "attn.indexer.compressor.wgate.weight", 2 * ihd, h);
                    random(p + "attn.indexer.weights_proj.weight", v.indexNHeads(), h);
                    linear(p + "attn.indexer.wq_b", (long) v.indexNHeads() * ihd, v.qLoraRank());
                }
            }
            ones(p + "attn_norm.weight", h);
            ones(p + "ffn_norm.weight", h);
            for (String mix : new String[]{"hc_attn_", "hc_ffn_"}) {
                random(p + mix + "base", mixes);
                random(p + mix + "fn", mixes, hc * h);
                ones(p + mix + "scale", 3);
            }
            random(p + "ffn.gate.weight", experts, h);
            if (s.mlpKind(l) == MlpKind.HASH_MOE) {
                entries.put(p + "ffn.gate.tid2eid", new Entry(Kind.TABLE, DType.I64, new long[]{s.vocabSize(), s.moe().topK()}));
            } else {
                random(p + "ffn.gate.bias", experts);
            }
            for (int e = 0; e < experts; e++) {
                fp4(p + "ffn.experts." + e + ".w1", inter, h);
                fp4(p + "ffn.experts." + e + ".w2", h, inter);
                fp4(p + "ffn.experts." + e + ".w3", inter, h);
            }
            long shared = s.moe().sharedIntermediateSize();
            linear(p + "ffn.shared_experts.w1", shared, h);
            linear(p + "ffn.shared_experts.w2", h, shared);
            linear(p + "ffn.shared_experts.w3", shared, h);
        }
    }

    private void random(String name, long... shape) {
        entries.put(name, new Entry(Kind.RANDOM, DType.BF16, shape));
    }

    /** A linear's weight [out, in]: bf16, or FP8 with its block scales. */
    private void linear(String module, long out, long in) {
        if (!fp8) {
            random(module + ".weight", out, in);
            return;
        }
        entries.put(module + ".weight", new Entry(Kind.FP8, DType.F8E4M3, new long[]{out, in}));
        entries.put(module + ".scale", new Entry(Kind.FP8_SCALES, DType.U8, new long[]{(out + 127) / 128, (in + 127) / 128}));
    }

    private void ones(String name, long... shape) {
        entries.put(name, new Entry(Kind.ONES, DType.BF16, shape));
    }

    private void fp4(String module, long out, long in) {
        entries.put(module + ".weight", new Entry(Kind.CODES, DType.U8, new long[]{out, in / 2}));
        entries.put(module + ".scale", new Entry(Kind.SCALES, DType.U8, new long[]{out, in / 32}));
    }

    @Override
    public boolean has(String name) {
        return entries.containsKey(name);
    }

    @Override
    public Set<String> names() {
        return entries.keySet();
    }

    @Override
    public Tensor tensor(String name, long... shape) {
        Entry e = entries.get(name);
        if (e == null) {
            throw new IllegalArgumentException("no tensor " + name + " in the random DeepSeek V4 weights");
        }
        if (shape.length != 0 && shape.length == e.shape.length) {
            for (int i = 0; i < shape.length; i++) {
                if (shape[i] >= 0 && shape[i] != e.shape[i]) {
                    throw new IllegalArgumentException(name + ": asked " + Arrays.toString(shape) + ", made "
                            + Arrays.toString(e.shape));
                }
            }
        }
        Tensor t = Tensor.allocate(Arena.ofAuto(), e.dtype, e.shape);
        long n = t.numel();
        long s0 = seed ^ name.hashCode() * 0x9E3779B97F4A7C15L;
        int chunks = (int) Math.min(256, Math.max(1, n >> 16));
        long per = (n + chunks - 1) / chunks;
        IntStream.range(0, chunks).parallel().forEach(c -> {
            SplittableRandom r = new SplittableRandom(s0 + c);
            for (long i = c * per, end = Math.min(n, (c + 1) * per); i < end; i++) {
                switch (e.kind) {
                    case ONES -> t.segment().setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i, (short) 0x3F80);
                    case RANDOM -> t.segment().setAtIndex(ValueLayout.JAVA_SHORT_UNALIGNED, i,
                            (short) (Float.floatToRawIntBits((float) ((r.nextDouble() * 2 - 1) * HALF_WIDTH)) >>> 16));
                    case CODES -> t.segment().set(ValueLayout.JAVA_BYTE, i, (byte) r.nextInt(256));
                    case SCALES -> t.segment().set(ValueLayout.JAVA_BYTE, i, (byte) (127 - 8));
                    case FP8 -> t.segment().set(ValueLayout.JAVA_BYTE, i,
                            (byte) ((r.nextInt(2) << 7) | ((1 + r.nextInt(8)) << 3) | r.nextInt(8)));
                    case FP8_SCALES -> t.segment().set(ValueLayout.JAVA_BYTE, i, (byte) (127 - 7));
                    case TABLE -> t.segment().setAtIndex(ValueLayout.JAVA_LONG_UNALIGNED, i, r.nextInt(experts));
                }
            }
        });
        return t;
    }
}
