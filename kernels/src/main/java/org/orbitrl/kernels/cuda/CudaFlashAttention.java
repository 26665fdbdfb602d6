package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.RopeTable;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.cuda.internal.Launcher;

import java.util.Arrays;
import java.util.function.Function;

/**
 * The tiled attention kernels of {@code flash_attention.cu}: causal prefill (16 queries of one head
 * per block sharing key/value tiles staged in shared memory, online softmax) and decode over the
 * paged KV cache (block tables as the model's {@code kv.BlockPool} lays them out, key splits merged
 * by {@code attention_combine}). Both take head dims up to {@value #MAX_DIM} that are multiples of 4.
 * Paged decode takes a tiled kernel of {@code paged_decode.cu} for query groups up to
 * {@value #TILED_MAX_GROUP} (all heads of a kv head share each cp.async-staged tile, so K and V are
 * read once per sequence, kv head and split), else the per-warp kernel of {@code flash_attention.cu}. Over a
 * bf16 cache with equal head dims of 64 or 128 and query groups up to {@value #MMA_MAX_GROUP} it takes the
 * tensor-core kernels of {@code paged_decode.cu} (q and the probabilities rounded to bf16; {@link #pagedMma}).
 *
 * <p>Paged decode with key splits uses the context's attention scratch buffers; a CUDA graph that
 * captures it must be captured after one direct call at the same shapes (so that the buffers have
 * their final size) and stays valid only while no larger attention call regrows them.
 */
final class CudaFlashAttention {
    static final int MAX_DIM = 128;           // FA_MAXD, and 32 * FA_MAXC for values
    private static final int PREFILL_QUERIES = 16; // FA_WARPS * FA_QW
    private static final int TILE = 32;       // FA_TK
    private static final int TILED_KEYS = 32; // PD_TK (paged_decode.cu)
    /** Keys a tiled decode block takes at most while the sequences alone leave the device short of blocks. */
    static final int TILED_SPLIT_KEYS = 128;
    /** Largest query group (Hq / Hkv) the tiled paged decode kernels take. */
    static final int TILED_MAX_GROUP = 8;
    /** Largest query group of the tensor-core paged decode kernels (the 16 rows of an mma tile). */
    static final int MMA_MAX_GROUP = 16;
    private static final int MMA_WARPS = 4;   // PM_WARPS (paged_decode.cu)
    private static final int MMA_KEYS = 16;   // PM_TK
    /** Keys a tensor-core decode block takes at least: a tile for each of its warps. */
    static final int MMA_SPLIT_KEYS = MMA_WARPS * MMA_KEYS;
    /** The fewest keys a tensor-core split takes by default while its blocks stay within one an SM ({@link #mmaSplits}). */
    static final int MMA_FINE_SPLIT_KEYS = 32;

    private final CudaContext ctx;
    private final Kernel prefill;
    private final Kernel paged;
    private final Kernel pagedTiled;
    private final Kernel pagedTiledH2;
    private final Kernel pagedBf16;        // the same three over a bf16 cache
    private final Kernel pagedTiledBf16;
    private final Kernel pagedTiledH2Bf16;
    /**
     * Query heads per warp of the tiled paged decode kernel of {@code paged_decode.cu} (every query
     * head of a kv head on one shared key/value tile), 2 by default; 0 for the per-warp kernel of
     * {@code flash_attention.cu}. From {@code -Dorbit.cuda.pagedDecode}: {@code old} (0),
     * {@code heads4} (4), anything else 2; read when the backend is made. Two heads a warp (four warps
     * a block) measured faster on the H200 at every batch of the Qwen3-30B-A3B decode bench (B=64,
     * S=512: 83 against 117 µs, 0.38 against 0.27 of copy bandwidth on K+V).
     */
    final int tiledHeads = switch (String.valueOf(System.getProperty("orbit.cuda.pagedDecode"))) {
        case "old" -> 0;
        case "heads4" -> 4;
        default -> 2;
    };
    /**
     * Whether decode attention over a bf16 cache takes the tensor-core kernels ({@code paged_decode_mma_*}: q and the
     * probabilities rounded to bf16) where they apply: {@code -Dorbit.cuda.pagedMma=off} keeps the tiled kernels (exact
     * products of f32 q with the widened cache); read when the backend is made.
     */
    final boolean pagedMma = !"off".equals(System.getProperty("orbit.cuda.pagedMma"));
    private final Kernel pagedMma64;
    private final Kernel pagedMma128;
    private final Kernel pagedMma3x64;  // three stages a warp
    private final Kernel pagedMma3x128;
    private final Kernel pagedMmaMerged64;   // the same, merging their key splits themselves
    private final Kernel pagedMmaMerged128;
    private final Kernel pagedMma3xMerged64;
    private final Kernel pagedMma3xMerged128;
    private final Kernel pagedMmaPrep64;     // the same with the step's q/k/v preparation, in clusters
    private final Kernel pagedMmaPrep128;
    private final Kernel pagedMma3xPrep64;
    private final Kernel pagedMma3xPrep128;
    private final Kernel pagedMmaPrepQf64;   // the cluster form with q made before the first copies (PREP_Q_FIRST_PROPERTY, the default)
    private final Kernel pagedMmaPrepQf128;
    private final Kernel pagedMmaPrepQf8x64;  // the same for groups of at most 8 with the rope in halves (PREP_GROUP8_PROPERTY)
    private final Kernel pagedMmaPrepQf8x128;
    private final Kernel pagedMmaPrepQfl64;   // the q-first forms with each round of loads issued together (PREP_LOADS_FIRST_PROPERTY)
    private final Kernel pagedMmaPrepQfl128;
    private final Kernel pagedMmaPrepQf8l64;
    private final Kernel pagedMmaPrepQf8l128;
    private final Kernel pagedMmaPrepQf8p64;  // the group-8 loads-first forms with the first pages read in round one
    private final Kernel pagedMmaPrepQf8p128;
    private final Kernel combine;
    private final Kernel kvWrite;
    private final Kernel kvWriteBf16;
    private final Kernel prep;
    private final Kernel prep3;
    private final Kernel prepBf16;
    private final Kernel prep3Bf16;
    private final Function<RopeTable, Tensor[]> ropeTables; // {cos, sin} on the device

    CudaFlashAttention(CudaContext ctx, Function<RopeTable, Tensor[]> ropeTables) {
        this.ctx = ctx;
        this.ropeTables = ropeTables;
        this.prep = ctx.kernel("flash_attention", "qkv_prep_f32");
        this.prep3 = ctx.kernel("flash_attention", "qkv_prep3_f32");
        this.prepBf16 = ctx.kernel("flash_attention", "qkv_prep_kvbf16");
        this.prep3Bf16 = ctx.kernel("flash_attention", "qkv_prep3_kvbf16");
        this.pagedBf16 = ctx.kernel("flash_attention", "paged_decode_kvbf16");
        this.pagedTiledBf16 = ctx.kernel("paged_decode", "paged_decode_tiled_kvbf16");
        this.pagedTiledH2Bf16 = ctx.kernel("paged_decode", "paged_decode_tiled_h2_kvbf16");
        this.pagedMma64 = ctx.kernel("paged_decode", "paged_decode_mma_d64_kvbf16");
        this.pagedMma128 = ctx.kernel("paged_decode", "paged_decode_mma_d128_kvbf16");
        this.pagedMma3x64 = ctx.kernel("paged_decode", "paged_decode_mma3_d64_kvbf16");
        this.pagedMma3x128 = ctx.kernel("paged_decode", "paged_decode_mma3_d128_kvbf16");
        this.pagedMmaMerged64 = ctx.kernel("paged_decode", "paged_decode_mma_merged_d64_kvbf16");
        this.pagedMmaMerged128 = ctx.kernel("paged_decode", "paged_decode_mma_merged_d128_kvbf16");
        this.pagedMma3xMerged64 = ctx.kernel("paged_decode", "paged_decode_mma3_merged_d64_kvbf16");
        this.pagedMma3xMerged128 = ctx.kernel("paged_decode", "paged_decode_mma3_merged_d128_kvbf16");
        this.pagedMmaPrep64 = ctx.kernel("paged_decode", "paged_decode_mma_prep_d64_kvbf16");
        this.pagedMmaPrep128 = ctx.kernel("paged_decode", "paged_decode_mma_prep_d128_kvbf16");
        this.pagedMma3xPrep64 = ctx.kernel("paged_decode", "paged_decode_mma3_prep_d64_kvbf16");
        this.pagedMma3xPrep128 = ctx.kernel("paged_decode", "paged_decode_mma3_prep_d128_kvbf16");
        this.pagedMmaPrepQf64 = ctx.kernel("paged_decode", "paged_decode_mma_prep_qf_d64_kvbf16");
        this.pagedMmaPrepQf128 = ctx.kernel("paged_decode", "paged_decode_mma_prep_qf_d128_kvbf16");
        this.pagedMmaPrepQf8x64 = ctx.kernel("paged_decode", "paged_decode_mma_prep_qf8_d64_kvbf16");
        this.pagedMmaPrepQf8x128 = ctx.kernel("paged_decode", "paged_decode_mma_prep_qf8_d128_kvbf16");
        this.pagedMmaPrepQfl64 = ctx.kernel("paged_decode", "paged_decode_mma_prep_qfl_d64_kvbf16");
        this.pagedMmaPrepQfl128 = ctx.kernel("paged_decode", "paged_decode_mma_prep_qfl_d128_kvbf16");
        this.pagedMmaPrepQf8l64 = ctx.kernel("paged_decode", "paged_decode_mma_prep_qf8l_d64_kvbf16");
        this.pagedMmaPrepQf8l128 = ctx.kernel("paged_decode", "paged_decode_mma_prep_qf8l_d128_kvbf16");
        this.pagedMmaPrepQf8p64 = ctx.kernel("paged_decode", "paged_decode_mma_prep_qf8p_d64_kvbf16");
        this.pagedMmaPrepQf8p128 = ctx.kernel("paged_decode", "paged_decode_mma_prep_qf8p_d128_kvbf16");
        this.kvWriteBf16 = ctx.kernel("flash_attention", "paged_kv_write_kvbf16");
        this.prefill = ctx.kernel("flash_attention", "flash_prefill_f32");
        this.paged = ctx.kernel("flash_attention", "paged_decode_f32");
        this.pagedTiled = ctx.kernel("paged_decode", "paged_decode_tiled_f32");
        this.pagedTiledH2 = ctx.kernel("paged_decode", "paged_decode_tiled_h2_f32");
        this.combine = ctx.kernel("attention", "attention_combine");
        this.kvWrite = ctx.kernel("flash_attention", "paged_kv_write");
    }

    /**
     * One launch from the fused projection to attention inputs: per head RMSNorm (q and k, optional),
     * rope at {@code positions}, q into {@code qOut}, k and v appended to the paged caches at {@code slots}.
     */
    void qkvPrep(Tensor qkv, int hq, int hkv, int d, int dv, Tensor qNorm, Tensor kNorm, float eps, Tensor positions, RopeTable table,
                 Tensor qOut, Tensor kCache, Tensor vCache, Tensor slots) {
        ctx.devContiguous("qkvPrep qkv", qkv, DType.F32);
        int b = Math.toIntExact(positions.numel());
        long rowW = (long) (hq + hkv) * d + (long) hkv * dv;
        if (qkv.numel() != b * rowW) {
            throw new IllegalArgumentException("qkvPrep: qkv " + qkv + " must be [" + b + ", " + rowW + "] (Hq " + hq + ", Hkv " + hkv
                    + ", D " + d + ", Dv " + dv + ")");
        }
        prepLaunch("qkvPrep", kCache.dtype() == DType.BF16 ? prepBf16 : prep, new Object[]{qkv}, b, hq, hkv, d, dv, qNorm, kNorm, eps,
                positions, table, qOut, kCache, vCache, slots);
    }

    /**
     * {@link #qkvPrep} from the three projections' outputs: q [B, Hq, D], k [B, Hkv, D] and v [B, Hkv, Dv], contiguous f32
     * (what {@link org.orbitrl.kernels.Backend#pagedDecodePrep} takes).
     */
    void qkvPrep3(Tensor q, Tensor k, Tensor v, Tensor qNorm, Tensor kNorm, float eps, Tensor positions, RopeTable table, Tensor qOut,
                  Tensor kCache, Tensor vCache, Tensor slots) {
        ctx.devContiguous("pagedDecodePrep q", q, DType.F32);
        ctx.devContiguous("pagedDecodePrep k", k, DType.F32);
        ctx.devContiguous("pagedDecodePrep v", v, DType.F32);
        int b = Math.toIntExact(positions.numel());
        checkProjections("pagedDecodePrep", q, k, v, b);
        prepLaunch("pagedDecodePrep", kCache.dtype() == DType.BF16 ? prep3Bf16 : prep3, new Object[]{q, k, v}, b, q.size(1), k.size(1),
                q.size(2), v.size(2), qNorm, kNorm, eps, positions, table, qOut, kCache, vCache, slots);
    }

    /** The checks and the launch both prep kernels share; {@code inputs} lead the kernel's arguments. */
    private void prepLaunch(String op, Kernel kernel, Object[] inputs, int b, int hq, int hkv, int d, int dv, Tensor qNorm, Tensor kNorm,
                            float eps, Tensor positions, RopeTable table, Tensor qOut, Tensor kCache, Tensor vCache, Tensor slots) {
        ctx.devContiguous(op + " q out", qOut, DType.F32);
        checkCaches(op, kCache, vCache);
        ctx.devContiguous(op + " positions", positions, DType.I32);
        ctx.devContiguous(op + " slots", slots, DType.I32);
        if (qOut.numel() != (long) b * hq * d || slots.numel() != b || kCache.dim(-1) != (long) hkv * d || vCache.dim(-1) != (long) hkv * dv
                || table.rotaryDim() > d) {
            throw new IllegalArgumentException(op + ": q out " + qOut + " must be [" + b + ", " + hq + ", " + d + "], slots " + slots
                    + " [" + b + "], caches " + kCache + " / " + vCache + " rows of " + hkv + " x " + d + " / " + dv + ", rotary dim "
                    + table.rotaryDim() + " at most " + d);
        }
        DType normType = normType(op, qNorm, kNorm, d);
        if (b == 0) {
            return;
        }
        Tensor[] cs = ropeTables.apply(table);
        Object[] rest = {hq, hkv, d, dv, qNorm, kNorm, normType == DType.BF16 ? 1 : 0, eps, positions, cs[0], cs[1], table.rotaryDim() / 2,
                table.style() == RopeTable.Style.INTERLEAVED ? 1 : 0, table.maxPositions(), qOut, kCache, vCache, slots, ctx.errorFlag};
        Object[] args = new Object[inputs.length + rest.length];
        System.arraycopy(inputs, 0, args, 0, inputs.length);
        System.arraycopy(rest, 0, args, inputs.length, rest.length);
        Launcher.launch(kernel, ctx.stream.handle(), b, hq + hkv, 128, 4 * d, args);
    }

    /** q [B, Hq, D], k [B, Hkv, D] and v [B, Hkv, Dv] of {@code b} sequences, checked. */
    private static void checkProjections(String op, Tensor q, Tensor k, Tensor v, int b) {
        if (q.rank() != 3 || k.rank() != 3 || v.rank() != 3 || q.size(0) != b || k.size(0) != b || v.size(0) != b
                || k.size(1) != v.size(1) || k.size(2) != q.size(2)) {
            throw new IllegalArgumentException(op + ": q " + q + ", k " + k + ", v " + v + " must be [B, Hq, D], [B, Hkv, D],"
                    + " [B, Hkv, Dv] for " + b + " positions");
        }
    }

    /** The sinks of {@code spec} (null, or f32 [Hq] in device memory), checked. */
    private Tensor sinks(String op, AttentionSpec spec, int hq) {
        Tensor sinks = spec.sinks();
        if (sinks != null) {
            ctx.devContiguous(op + " sinks", sinks, DType.F32);
            if (sinks.numel() != hq) {
                throw new IllegalArgumentException(op + ": sinks " + sinks + " must hold one logit per query head (" + hq + ")");
            }
        }
        return sinks;
    }

    /**
     * The batch the key splits are counted for: the sequences rounded up to a power of two (a step padded to a captured
     * graph's batch splits, and so sums, every row as the unpadded step does), times the kv heads.
     */
    private static long splitBase(int b, int hkv) {
        return (long) (b <= 1 ? 1 : Integer.highestOneBit(b - 1) << 1) * hkv;
    }

    /** Shared memory of the tensor-core decode kernels' rings of key and value tiles, {@code ring} stages a warp. */
    private static int mmaStageBytes(int ring, int d) {
        return MMA_WARPS * ring * 2 * MMA_KEYS * (d + 8) * 2;
    }

    /** Shared memory of the tensor-core decode kernels' merge of their warps: each warp's max and sum, and accumulator. */
    private static int mmaMergeBytes(int d) {
        return 4 * (2 * MMA_WARPS * 16 + MMA_WARPS * 16 * d);
    }

    /** The dtype of the per-head norm weights (f32 or bf16 [D], one dtype for both; null where neither is given), checked. */
    private DType normType(String op, Tensor qNorm, Tensor kNorm, int d) {
        DType normType = null;
        for (Tensor n : new Tensor[]{qNorm, kNorm}) {
            if (n != null) {
                ctx.devContiguous(op + " norm weight", n, null);
                if (n.numel() != d || (n.dtype() != DType.F32 && n.dtype() != DType.BF16) || (normType != null && n.dtype() != normType)) {
                    throw new IllegalArgumentException(op + ": norm weights must be f32 or bf16 [" + d + "] of one dtype, got " + n);
                }
                normType = n.dtype();
            }
        }
        return normType;
    }

    /** {@value}: the decode attention with the step's q/k/v preparation in its launch ({@link #prepAttention}). */
    static final String PREP_ATTENTION_PROPERTY = "orbit.cuda.prepAttention";
    /**
     * {@code -Dorbit.cuda.prepQFirst=on|off} (read at each call; on by default): the prepared attention's cluster form at a
     * ring of two makes q (its loads, the head norm and the rope) before it issues its first tiles'
     * copies ({@code paged_decode_mma_prep_qf_*}), so that q's round trips overlap the block tables' and the copies',
     * instead of after them ({@code off}: {@code paged_decode_mma_prep_*}); the same bits. The kernel timeline put q ready
     * 3.3 µs after those copies were issued; on an H100 the captured one-sequence step of the Qwen3-30B-A3B shape took
     * 2.832-2.848 ms with it against 2.873-2.889 without (one JVM).
     */
    static final String PREP_Q_FIRST_PROPERTY = "orbit.cuda.prepQFirst";

    /** Whether {@link #PREP_Q_FIRST_PROPERTY} asks for the q-first kernels. */
    static boolean prepQFirst() {
        return Switches.onOff(PREP_Q_FIRST_PROPERTY, true);
    }

    /**
     * {@code -Dorbit.cuda.prepGroup8=on|off} (read at each call; on by default): where the q-first kernel is taken for
     * groups of at most 8 query heads and a rope in halves (Qwen3's, gpt-oss's), {@code paged_decode_mma_prep_qf8_*}: the
     * mma's rows past 8 are padding there, so their q (loads, norm, rope), scores and partials are left out, and the
     * rope's interleaved form too: 18% less code (53.6 KiB of sm_90 {@code .text} against 65.5 at D 128) for the same bits.
     * On an H100 the Qwen3-30B-A3B step at one sequence took 2.690-2.701 ms with it against 2.725-2.735 without (one JVM).
     */
    static final String PREP_GROUP8_PROPERTY = "orbit.cuda.prepGroup8";

    /** Whether {@link #PREP_GROUP8_PROPERTY} asks for the kernels of groups of at most 8. */
    static boolean prepGroup8() {
        return Switches.onOff(PREP_GROUP8_PROPERTY, true);
    }

    /**
     * {@code -Dorbit.cuda.prepLoadsFirst=on|off} (read at each call; on by default): where the q-first cluster form is
     * taken, {@code paged_decode_mma_prep_qfl_*} / {@code _qf8l_*}, whose warps issue
     * each round of their loads together, since a warp issues in order and stalls at the first use of a load that has
     * not come: q's, the norm weights', the position's and the length's; then the block table's pages and the rope's row;
     * then the first tiles' copies, with q made while they come. Two chains of two round trips each (the length, then the
     * table; the position, then the rope's row) before the copies, in place of one after the other. The same bits.
     */
    static final String PREP_LOADS_FIRST_PROPERTY = "orbit.cuda.prepLoadsFirst";

    /**
     * {@code -Dorbit.cuda.attentionTrigger=start|copies|tiles} (read at each call; {@code copies} by default): where the
     * loads-first kernels ({@link #PREP_LOADS_FIRST_PROPERTY}) let the launch after them start its blocks, which in a
     * one-sequence step is o's product loading its 16.8 MB of weights ahead of its wait: at each block's start, once
     * its first copies are issued, or once its tiles are multiplied. Later, o's loads no longer queue in the memory
     * system ahead of the attention's few round trips, but have less of the attention's time to come in. What o reads
     * is the same: its wait waits for the attention's completion either way. Measured on an H100 (Qwen3-30B-A3B shape,
     * a one-sequence captured step, two pairs of variants in one JVM): 2.586-2.622 ms at the start, 2.473-2.532 after
     * the copies, 2.541-2.585 after the tiles; at 8 sequences no difference.
     */
    static final String TRIGGER_PROPERTY = "orbit.cuda.attentionTrigger";

    /** {@link #TRIGGER_PROPERTY} as the kernels' {@code trigger}: 0 at the start, 1 after the first copies, 2 after the tiles. */
    static int attentionTrigger() {
        String v = System.getProperty(TRIGGER_PROPERTY, "copies").trim();
        return switch (v) {
            case "start" -> 0;
            case "copies" -> 1;
            case "tiles" -> 2;
            default -> throw new IllegalArgumentException("-D" + TRIGGER_PROPERTY + "=" + v + ": expected start, copies or tiles");
        };
    }

    /** Whether {@link #PREP_LOADS_FIRST_PROPERTY} asks for the loads issued by rounds. */
    static boolean prepLoadsFirst() {
        return Switches.onOff(PREP_LOADS_FIRST_PROPERTY, true);
    }

    /**
     * {@code -Dorbit.cuda.prepPagesFirst=on|off} (read at each call; off by default, not yet measured): where the
     * group-8 loads-first kernel is taken, {@code paged_decode_mma_prep_qf8p_*} in its place, whose first round of loads
     * also holds the block table's pages of each warp's first tiles, read as though the keys start at 0 (true but in a
     * sliding window past its length, where the kernel reads them after the length as before), reads the length after
     * the others, keeps the norm weights as their bits until q is made, and issues its first copies before the rope's
     * row and the new key's inputs. The loads-first kernel's SASS (nvcc 13.0, sm_90) stalls at the length's first use
     * before it issues q's loads, and with bf16 norm weights again at their conversion before the pages' loads: its
     * first copies follow three round trips (the length's, q's and the norm's, the pages'), q three; here the copies
     * follow one and q two (the position, then the rope's row). The same bits.
     */
    static final String PREP_PAGES_FIRST_PROPERTY = "orbit.cuda.prepPagesFirst";

    /** Whether {@link #PREP_PAGES_FIRST_PROPERTY} asks for the pages read in round one. */
    static boolean prepPagesFirst() {
        return Switches.onOff(PREP_PAGES_FIRST_PROPERTY, false);
    }

    /** The most blocks of a (sequence, kv head)'s cluster (sm_90's non-portable limit). */
    static final int PREP_MAX_CLUSTER = 16;
    /** The widest tables (in keys) {@link #prepAttention} takes where the default key splits outnumber a cluster's blocks. */
    static final int PREP_MAX_KEYS = 2048;

    /**
     * {@link #qkvPrep3} and then {@link #pagedDecode} of the prepared q in one launch ({@code paged_decode_mma_prep_*}),
     * where the tensor-core decode kernels take the cache (bf16, equal head dims of 64 or 128, query groups up to
     * {@value #MMA_MAX_GROUP}), the rope turns the whole head, and the kernels have thread block clusters (built for sm_90
     * or newer, the cluster size one the device takes, {@link Kernel#clustersFit}): the
     * blocks of a sequence's kv head, as many as {@link #mmaSplits} gives it up to {@value #PREP_MAX_CLUSTER} (one
     * cluster), deal its key tiles out in turn and merge their partials through each other's shared memory, so that
     * neither the preparation's launch nor {@code attention_combine}'s is left; the block whose tile holds the new key
     * makes that row and writes it to the caches. Where the default splits outnumber a cluster (many keys, few
     * sequences) it takes tables of up to {@value #PREP_MAX_KEYS} keys only. {@code -Dorbit.cuda.prepAttention} (read at
     * each call): {@code on} (the default), {@code off}, or a cluster size from 1 to 16 to take always (a test's sweep).
     *
     * @return false, nothing launched, where it does not apply: the caller prepares and attends in two operations
     */
    boolean prepAttention(Tensor q, Tensor k, Tensor v, Tensor qNorm, Tensor kNorm, float eps, Tensor positions, RopeTable table,
                          Tensor kCache, Tensor vCache, Tensor slots, Tensor tables, Tensor lens, int blockSize, Tensor out,
                          AttentionSpec spec) {
        int forced = prepCluster();
        if (forced < 0 || !pagedMma || kCache.dtype() != DType.BF16 || vCache == null
                || System.getProperty("orbit.cuda.pagedSplits") != null) {   // a sweep of the separate attention's splits
            return false;
        }
        String op = "pagedDecodePrepAttention";
        ctx.devContiguous(op + " q", q, DType.F32);
        ctx.devContiguous(op + " k", k, DType.F32);
        ctx.devContiguous(op + " v", v, DType.F32);
        ctx.devContiguous(op + " positions", positions, DType.I32);
        ctx.devContiguous(op + " slots", slots, DType.I32);
        int b = Math.toIntExact(positions.numel());
        checkProjections(op, q, k, v, b);
        if (slots.numel() != b) {
            throw new IllegalArgumentException(op + ": slots " + slots + " must hold one row a sequence (" + b + ")");
        }
        int hq = q.size(1);
        int hkv = k.size(1);
        int d = q.size(2);
        checkPaged(ctx, q, kCache, vCache, tables, lens, blockSize, hkv, out);
        DType normType = normType(op, qNorm, kNorm, d);
        Tensor sinks = sinks(op, spec, hq);
        int group = hq / hkv;
        if (v.size(2) != d || out.size(2) != d || (d != 64 && d != 128) || group > MMA_MAX_GROUP || table.rotaryDim() != d
                || table.maxPositions() <= 0 || kCache.dim(0) > Integer.MAX_VALUE || CudaAllocator.address(kCache) % 16 != 0
                || CudaAllocator.address(vCache) % 16 != 0) {
            return false;
        }
        int maxBlocks = tables.size(1);
        int maxKeys = maxBlocks * blockSize;
        long base = splitBase(b, hkv);
        int cluster = forced;
        if (cluster == 0) {
            int splits = mmaSplits(base, ctx.device.multiprocessors(), maxKeys, mmaSplitKeys());
            if (splits > PREP_MAX_CLUSTER && maxKeys > PREP_MAX_KEYS) {
                return false;
            }
            cluster = Math.min(splits, PREP_MAX_CLUSTER);
        }
        if (b == 0) {
            return true;
        }
        int ring = pagedStages();
        Tensor[] cs = ropeTables.apply(table);
        long[] qs = q.strides();
        long[] os = out.strides();
        long blocks = (long) b * hkv * cluster;
        boolean qFirst = ring != 3 && prepQFirst();
        boolean group8 = group <= 8 && table.style() != RopeTable.Style.INTERLEAVED && prepGroup8();
        boolean loadsFirst = qFirst && prepLoadsFirst();
        Kernel kernel = ring == 3 ? (d == 64 ? pagedMma3xPrep64 : pagedMma3xPrep128)
                : !qFirst ? (d == 64 ? pagedMmaPrep64 : pagedMmaPrep128)
                : loadsFirst ? group8 ? prepPagesFirst() ? (d == 64 ? pagedMmaPrepQf8p64 : pagedMmaPrepQf8p128)
                : (d == 64 ? pagedMmaPrepQf8l64 : pagedMmaPrepQf8l128) : (d == 64 ? pagedMmaPrepQfl64 : pagedMmaPrepQfl128)
                : group8 ? (d == 64 ? pagedMmaPrepQf8x64 : pagedMmaPrepQf8x128)
                : (d == 64 ? pagedMmaPrepQf64 : pagedMmaPrepQf128);
        // the warps' rings, reused for their merge, then the block's partial past it
        int shared = Math.max(mmaStageBytes(ring, d), mmaMergeBytes(d) + 4 * (group * d + 2 * group));
        Object[] args = {q, qs[0], qs[1], kCache, vCache, tables, maxBlocks, lens, blockSize, out, os[0], os[1], hq, hkv, d, d,
                spec.slidingWindow(), spec.scale(), sinks, cluster, 0, null, null, k, v, qNorm, kNorm,
                normType == DType.BF16 ? 1 : 0, eps, positions, cs[0], cs[1], table.style() == RopeTable.Style.INTERLEAVED ? 1 : 0,
                table.maxPositions(), slots, ctx.errorFlag, null, loadsFirst ? attentionTrigger() : 0};
        if (!kernel.clustersFit(cluster, 32 * MMA_WARPS, shared)) {
            return false;   // kernels built below sm_90, or a cluster size this device refuses
        }
        if (cluster > 1) {
            Launcher.launchClusters(kernel, ctx.stream.handle(), blocks, cluster, 32 * MMA_WARPS, shared, args);
        } else {
            ctx.launchShared(kernel, blocks, 32 * MMA_WARPS, shared, args);
        }
        return true;
    }

    /** The key splits' partials in scratch: {accumulators [B, Hq, splits, Dv], {max, sum} [B, Hq, splits, 2]}, f32. */
    private Tensor[] splitPartials(int b, int hq, int splits, int dv) {
        long parts = (long) b * hq * splits;
        return new Tensor[]{ctx.scratch(CudaContext.Scratch.ATTENTION_ACC, DType.F32, parts * dv),
                ctx.scratch(CudaContext.Scratch.ATTENTION_ML, DType.F32, parts * 2)};
    }

    /** {@link #PREP_ATTENTION_PROPERTY}: -1 off, 0 on (the cluster from the key splits), or the cluster size to take. */
    static int prepCluster() {
        String v = System.getProperty(PREP_ATTENTION_PROPERTY, "on").trim();
        switch (v) {
            case "on":
                return 0;
            case "off":
                return -1;
            default:
                int n;
                try {
                    n = Integer.parseInt(v);
                } catch (NumberFormatException e) {
                    n = 0;
                }
                if (n < 1 || n > PREP_MAX_CLUSTER) {
                    throw new IllegalArgumentException("-D" + PREP_ATTENTION_PROPERTY + "=" + v + ": expected on, off or a cluster size from 1 to "
                            + PREP_MAX_CLUSTER);
                }
                return n;
        }
    }

    /**
     * kCache[slots[b]] = k[b], vCache[slots[b]] = v[b]; k [B, Hkv·D], v [B, Hkv·Dv] f32; caches f32 or bf16 (rounded to
     * nearest even); v and vCache null: keys only; a negative slot skips.
     */
    void pagedKvWrite(Tensor k, Tensor v, Tensor kCache, Tensor vCache, Tensor slots) {
        ctx.devContiguous("pagedKvWrite k", k, DType.F32);
        if ((v == null) != (vCache == null)) {
            throw new IllegalArgumentException("pagedKvWrite: v " + v + " and the value cache " + vCache + " must be both given or both null");
        }
        if (v != null) {
            ctx.devContiguous("pagedKvWrite v", v, DType.F32);
            checkCaches("pagedKvWrite", kCache, vCache);
        } else {
            checkCaches("pagedKvWrite", kCache, kCache);
        }
        ctx.devContiguous("pagedKvWrite slots", slots, DType.I32);
        int b = Math.toIntExact(slots.numel());
        long kw = kCache.dim(-1);
        long vw = vCache == null ? 0 : vCache.dim(-1);
        if (k.numel() != b * kw || (v != null && v.numel() != b * vw)) {
            throw new IllegalArgumentException("pagedKvWrite: k " + k + " and v " + v + " must hold " + b + " rows of the caches' widths "
                    + kw + " / " + vw);
        }
        if (b > 0) {
            ctx.launch(kCache.dtype() == DType.BF16 ? kvWriteBf16 : kvWrite, b, 128, k, v, kCache, vCache, slots, (int) kw, (int) vw);
        }
    }

    /** Whether the prefill kernel takes these (already validated) tensors. */
    static boolean prefillFits(Tensor q, Tensor k, Tensor v, Tensor out) {
        int d = q.size(2);
        int dv = v.size(2);
        if (d > MAX_DIM || dv > MAX_DIM || d % 4 != 0 || dv % 4 != 0) {
            return false;
        }
        for (Tensor t : new Tensor[]{q, k, v}) {
            long[] s = t.strides();
            if (s[0] % 4 != 0 || s[1] % 4 != 0 || CudaAllocator.address(t) % 16 != 0) {
                return false;
            }
        }
        return true;
    }

    /** Causal prefill; arguments validated by the caller (see {@link CudaAttentionOps#attention}). */
    void prefill(Tensor q, Tensor k, Tensor v, Tensor out, int queryStart, AttentionSpec spec) {
        int tq = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int hkv = k.size(1);
        int dv = v.size(2);
        long[] qs = q.strides();
        long[] ks = k.strides();
        long[] vs = v.strides();
        long[] os = out.strides();
        int shared = 4 * (PREFILL_QUERIES * d + TILE * (d + 4) + TILE * (dv + 4));
        long grid = (tq + PREFILL_QUERIES - 1) / PREFILL_QUERIES;
        Launcher.launch(prefill, ctx.stream.handle(), grid, hq, 128, shared, q, qs[0], qs[1], k, ks[0], ks[1], v, vs[0], vs[1],
                out, os[0], os[1], tq, hq, hkv, d, dv, queryStart, spec.slidingWindow(), spec.scale(), spec.sinks());
    }

    /**
     * Decode attention over a paged cache, one query per sequence.
     *
     * @param q         f32 [B, Hq, D] (last dimension contiguous)
     * @param kCache    f32 [blocks·blockSize, Hkv·D], one layer of the pool
     * @param vCache    f32 [blocks·blockSize, Hkv·Dv]
     * @param tables    i32 [B, maxBlocks]: sequence b's position s is in block tables[b, s / blockSize]
     * @param lens      i32 [B]: keys of sequence b (its query is at position lens[b] − 1; at least 1)
     * @param out       f32 [B, Hq, Dv]
     */
    void pagedDecode(Tensor q, Tensor kCache, Tensor vCache, Tensor tables, Tensor lens, int blockSize, int hkv, Tensor out,
                     AttentionSpec spec) {
        checkPaged(ctx, q, kCache, vCache, tables, lens, blockSize, hkv, out);
        int b = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int dv = out.size(2);
        if (d > MAX_DIM || dv > MAX_DIM || d % 4 != 0 || dv % 4 != 0 || q.strides()[0] % 4 != 0 || q.strides()[1] % 4 != 0
                || CudaAllocator.address(kCache) % 16 != 0 || CudaAllocator.address(vCache) % 16 != 0) {
            throw new IllegalArgumentException("pagedDecodeAttention: head dims " + d + "/" + dv
                    + " must be multiples of 4 up to " + MAX_DIM + ", with 16-byte aligned q rows and caches");
        }
        Tensor sinks = sinks("pagedDecodeAttention", spec, hq);
        if (b == 0) {
            return;
        }
        int maxBlocks = tables.size(1);
        int maxKeys = maxBlocks * blockSize;
        int group = hq / hkv;
        boolean bf16 = kCache.dtype() == DType.BF16;
        // cache rows as int; a bf16 row in 16-byte pieces
        boolean mma = bf16 && pagedMma && group <= MMA_MAX_GROUP && d == dv && (d == 64 || d == 128) && kCache.dim(0) <= Integer.MAX_VALUE;
        boolean tiled = mma || tiledHeads > 0 && group <= TILED_MAX_GROUP && kCache.dim(0) <= Integer.MAX_VALUE
                && (!bf16 || (d % 8 == 0 && dv % 8 == 0));
        long base = splitBase(b, hkv);
        // The split count depends only on the table's capacity, so a captured graph stays valid as sequences grow.
        // Tiled: 4 blocks per SM asked for (3 fit at D = Dv = 128), splits of whole tiles down to one; and while the
        // batch alone does not reach that, blocks of at most TILED_SPLIT_KEYS keys (the longest blocks set the tail).
        int splits = mma ? mmaSplits(base, ctx.device.multiprocessors(), maxKeys, mmaSplitKeys())
                : tiled ? tiledSplits(base, 4 * ctx.device.multiprocessors(), maxKeys)
                : splitCount(base, 2 * ctx.device.multiprocessors(), maxKeys, 64);
        String forced = System.getProperty("orbit.cuda.pagedSplits");   // a bench's sweep: the key splits, read at each call
        if (forced != null) {
            splits = Math.max(1, Math.min(Integer.parseInt(forced), (maxKeys + TILED_KEYS - 1) / TILED_KEYS));
        }
        int splitLen = (maxKeys + splits - 1) / splits;
        if (tiled) {
            int tile = mma ? MMA_KEYS : TILED_KEYS;
            splitLen = (splitLen + tile - 1) / tile * tile; // whole tiles
        }
        Tensor[] parts = splits > 1 ? splitPartials(b, hq, splits, dv) : new Tensor[2];
        Tensor partAcc = parts[0];
        Tensor partMl = parts[1];
        long[] qs = q.strides();
        long[] os = out.strides();
        long blocks = (long) b * hkv * splits; // the real sequences only (base may count padding)
        // each warp's ring of key and value tiles (rows padded by 16 bytes), reused for the warps' merge and, merging the
        // splits in the launch, for each head's split weights (G · (splits + 1) floats)
        int ring = pagedStages();
        int stages = mmaStageBytes(ring, d);
        int merge = mmaMergeBytes(d);
        // the tensor-core kernels merge their splits themselves (a ticket a sequence's kv head) where switched on
        boolean merged = mma && splits > 1 && (long) b * hkv <= CudaContext.TICKETS && 4L * group * (splits + 1) <= Math.max(stages, merge)
                && mergedSplits();
        if (mma) {
            Kernel kernel = merged
                    ? ring == 3 ? (d == 64 ? pagedMma3xMerged64 : pagedMma3xMerged128) : (d == 64 ? pagedMmaMerged64 : pagedMmaMerged128)
                    : ring == 3 ? (d == 64 ? pagedMma3x64 : pagedMma3x128) : (d == 64 ? pagedMma64 : pagedMma128);
            Object[] args = {q, qs[0], qs[1], kCache, vCache, tables, maxBlocks, lens, blockSize, out, os[0], os[1], hq, hkv, d, dv,
                    spec.slidingWindow(), spec.scale(), sinks, splits, splitLen, partAcc, partMl, ctx.tickets};
            ctx.launchShared(kernel, blocks, 32 * MMA_WARPS, Math.max(stages, merge),
                    merged ? args : Arrays.copyOf(args, args.length - 1));   // the tickets: the merged kernels' only
        } else if (tiled) {
            int warps = (group + tiledHeads - 1) / tiledHeads;
            // two stages of key and value tiles, q rows and probabilities of the block's head slots
            int pad = bf16 ? 8 : 4;   // 16 bytes of the cache's values a row
            int shared = 2 * TILED_KEYS * (d + pad + dv + pad) * (bf16 ? 2 : 4) + 4 * warps * tiledHeads * (d + TILED_KEYS);
            Kernel kernel = tiledHeads == 2 ? (bf16 ? pagedTiledH2Bf16 : pagedTiledH2) : (bf16 ? pagedTiledBf16 : pagedTiled);
            ctx.launchShared(kernel, blocks, 32 * warps, shared, q, qs[0], qs[1], kCache, vCache, tables, maxBlocks, lens,
                    blockSize, out, os[0], os[1], hq, hkv, d, dv, spec.slidingWindow(), spec.scale(), sinks, splits, splitLen,
                    partAcc, partMl);
        } else {
            int warps = Math.min(group, 8);
            int shared = 4 * (warps * d + TILE * (d + 4) + TILE * (dv + 4));
            ctx.launchShared(bf16 ? pagedBf16 : paged, blocks, 32 * warps, shared, q, qs[0], qs[1], kCache, vCache, tables, maxBlocks, lens,
                    blockSize, out, os[0], os[1], hq, hkv, d, dv, spec.slidingWindow(), spec.scale(), sinks, splits, splitLen,
                    partAcc, partMl);
        }
        if (splits > 1 && !merged) {
            ctx.launch(combine, (long) b * hq, 128, partAcc, partMl, out, os[0], os[1], hq, dv, splits);
        }
    }

    /**
     * Whether the tensor-core decode kernels merge their key splits in the launch ({@code paged_decode_mma*_merged_*}: the
     * block of a sequence's kv head that finishes last merges its splits as {@code attention_combine} does, bit for bit,
     * and that launch is left out): {@code -Dorbit.cuda.decodeMerge}, read at each call, {@code on} or {@code off} (the
     * default: a one-sequence decode step of Qwen3-30B-A3B's shape measured 4.593 ms with it against 4.494 without on an
     * H100, and a form that recomputed each head's split weights for every channel 5.440 against 4.611).
     */
    static boolean mergedSplits() {
        return Switches.onOff("orbit.cuda.decodeMerge", false);
    }

    private void checkCaches(String op, Tensor kCache, Tensor vCache) {
        checkCaches(ctx, op, kCache, vCache);
    }

    /** Contiguous device caches, both f32 or both bf16 (16-byte aligned rows are checked where a kernel needs them). */
    static void checkCaches(CudaContext ctx, String op, Tensor kCache, Tensor vCache) {
        ctx.devContiguous(op + " key cache", kCache, null);
        ctx.devContiguous(op + " value cache", vCache, null);
        if ((kCache.dtype() != DType.F32 && kCache.dtype() != DType.BF16) || vCache.dtype() != kCache.dtype()) {
            throw new IllegalArgumentException(op + ": the key and value caches must both be f32 or both bf16, got " + kCache + " / "
                    + vCache);
        }
    }

    /**
     * The tiled kernels' key splits: {@link #splitCount} for {@code target} blocks, and below that many blocks of
     * sequences alone at least one split per {@link #TILED_SPLIT_KEYS} keys of the capacity. Measured on the H200 (64
     * sequences of 524 keys in tables of 1024: 8 splits 85 µs against 3 splits 104 µs with an f32 cache, 76 against 95
     * with bf16; 8 and 256 sequences as before).
     */
    static int tiledSplits(long base, int target, int maxKeys) {
        int splits = splitCount(base, target, maxKeys, TILED_KEYS);
        return base >= target ? splits : Math.max(splits, (maxKeys + TILED_SPLIT_KEYS - 1) / TILED_SPLIT_KEYS);
    }

    /**
     * The tensor-core kernels' key splits on a device of {@code sms} SMs: as many as keep {@code base} blocks a split
     * within two blocks an SM (rounded down: a block's warps stream their own tiles, so fewer, longer blocks do
     * better), at most one per {@value #MMA_SPLIT_KEYS} keys of the capacity; and while one block an SM is not reached,
     * up to one per {@value #MMA_FINE_SPLIT_KEYS} keys (some of whose warps then have no tile). At least one.
     * {@code splitKeys} set ({@link #mmaSplitKeys}, not 0): two blocks an SM, at most one split per that many keys.
     * Measured on the H200 (sequences of 524 keys in tables of 1024, a bf16 cache): 64 sequences 40.6 µs with one
     * split against 63.6 with eight; 8 sequences 14.8 µs with eight against 19.2 with seventeen; 256 sequences one
     * split. On an H100, a Qwen3-30B-A3B-wide step over tables of 1024 keys (BENCHMARKS.md): one sequence 4.396-4.407
     * ms with 32 splits against 4.470 with 16; two sequences 6.449-6.459 with 16 against 6.577-6.582 with 32.
     */
    static int mmaSplits(long base, int sms, int maxKeys, int splitKeys) {
        if (splitKeys > 0) {
            return capped(base, 2 * sms, maxKeys, splitKeys);
        }
        return Math.max(capped(base, 2 * sms, maxKeys, MMA_SPLIT_KEYS), capped(base, sms, maxKeys, MMA_FINE_SPLIT_KEYS));
    }

    /** As many splits as keep {@code base} blocks a split within {@code target}, at most one per {@code splitKeys} keys, at least one. */
    private static int capped(long base, int target, int maxKeys, int splitKeys) {
        return base >= target ? 1 : (int) Math.max(1, Math.min(target / base, (maxKeys + splitKeys - 1) / splitKeys));
    }

    /** {@value #SPLIT_KEYS_PROPERTY}: the fewest keys of the tables' capacity a tensor-core split takes. */
    static final String SPLIT_KEYS_PROPERTY = "orbit.cuda.pagedSplitKeys";

    /**
     * The fewest keys of the tables' capacity a tensor-core key split takes when {@code -Dorbit.cuda.pagedSplitKeys}
     * (read at each call) sets them: 16, 32, 48 or 64; 0 when unset (the default of {@link #mmaSplits}: 64, and 32
     * while the blocks stay within one an SM).
     */
    static int mmaSplitKeys() {
        String v = System.getProperty(SPLIT_KEYS_PROPERTY);
        if (v == null) {
            return 0;
        }
        int n;
        try {
            n = Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            n = -1;
        }
        if (n < MMA_KEYS || n > MMA_SPLIT_KEYS || n % MMA_KEYS != 0) {
            throw new IllegalArgumentException("-D" + SPLIT_KEYS_PROPERTY + "=" + v + ": expected 16, 32, 48 or 64 (the fewest"
                    + " keys a tensor-core split takes, whole tiles of " + MMA_KEYS + ")");
        }
        return n;
    }

    /**
     * Key splits of a paged decode: enough that {@code base} (sequences rounded up to a power of two,
     * times kv heads) blocks per split reach {@code target} blocks, at most one per {@code minKeys}
     * keys of the tables' capacity, at least one.
     */
    static int splitCount(long base, int target, int maxKeys, int minKeys) {
        return base >= target ? 1 : (int) Math.max(1, Math.min((target + base - 1) / base, (maxKeys + minKeys - 1) / minKeys));
    }

    /**
     * The checks every paged decode attention makes: q and out f32 [B, H, D|Dv] with contiguous last
     * dimensions, contiguous f32 caches [rows, Hkv·D|Dv] in whole blocks, i32 tables [B, maxBlocks] and
     * lens [B], all in device memory and agreeing.
     */
    static void checkPaged(CudaContext ctx, Tensor q, Tensor kCache, Tensor vCache, Tensor tables, Tensor lens, int blockSize,
                           int hkv, Tensor out) {
        for (Object[] a : new Object[][]{{"q", q}, {"out", out}}) {
            Tensor t = (Tensor) a[1];
            ctx.dev("pagedDecodeAttention " + a[0], t);
            if (t.rank() != 3 || t.dtype() != DType.F32 || t.strides()[2] != 1) {
                throw new IllegalArgumentException("pagedDecodeAttention: " + a[0] + " must be f32 [B, H, D] with a contiguous last dimension, got " + t);
            }
        }
        checkCaches(ctx, "pagedDecodeAttention", kCache, vCache);
        ctx.devContiguous("pagedDecodeAttention block tables", tables, DType.I32);
        ctx.devContiguous("pagedDecodeAttention sequence lengths", lens, DType.I32);
        int b = q.size(0);
        int hq = q.size(1);
        int d = q.size(2);
        int dv = out.size(2);
        if (hkv <= 0 || hq % hkv != 0 || kCache.rank() != 2 || vCache.rank() != 2 || kCache.dim(1) != (long) hkv * d
                || vCache.dim(1) != (long) hkv * dv || kCache.dim(0) != vCache.dim(0) || kCache.dim(0) % blockSize != 0
                || out.dim(0) != b || out.dim(1) != hq || tables.rank() != 2 || tables.dim(0) != b || lens.numel() != b) {
            throw new IllegalArgumentException("pagedDecodeAttention: q " + q + ", caches " + kCache + " / " + vCache + " ("
                    + hkv + " kv heads, blocks of " + blockSize + "), tables " + tables + ", lens " + lens + ", out " + out
                    + " do not agree");
        }
    }

    /**
     * {@code -Dorbit.cuda.pagedStages}: the stages of each warp's ring of key and value tiles in the tensor-core decode
     * kernels, 2 (default: one tile in flight while one is multiplied) or 3 (two in flight; 104 KiB a block at D 128, two
     * blocks an SM). The same products in the same order either way. Read at each launch. In the Qwen3-30B-A3B decode
     * step at batch 64 on the H200 three stages against two, the same JVM and model each: 20.677 against 20.749 ms,
     * 20.672 against 20.761, 20.572 against 20.510; no difference beyond a run's spread.
     */
    private static int pagedStages() {
        return "3".equals(System.getProperty("orbit.cuda.pagedStages")) ? 3 : 2;
    }
}
