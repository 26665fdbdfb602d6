package org.orbitrl.memory.plan;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.function.IntPredicate;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.memory.plan.internal.ActivationModel;
import org.orbitrl.memory.plan.internal.KernelScratch;
import org.orbitrl.memory.plan.internal.MoeWorkingSet;
import org.orbitrl.model.spec.ModelSpec;

/**
 * Sizes a job before anything is loaded: bytes per GPU per {@link MemoryCategory}, for each role
 * of the layout, from the model's weight inventory, the base format, the adapter, the batch
 * shape and the layout. {@link #check} refuses a job that does not fit with a
 * {@link PlanRefusedException} that says which category overflows and what would make it fit.
 *
 * <p>Rollout and training may run at the same time (the pipeline is asynchronous), so a colocated
 * GPU holds the rollout's and the trainer's buffers together.
 */
public final class MemoryPlanner {
    private static final long GIB = 1L << 30;
    /** NCCL's own buffers and channels on a GPU that talks to others. */
    static final long NCCL_FIXED = GIB;
    /** Gradient all-reduce bucket, in adapter parameters (f32). */
    static final long GRAD_BUCKET_PARAMS = 1L << 26;

    private MemoryPlanner() {
    }

    /** The default runtime reserve: 2 GiB (CUDA context, cuBLAS workspaces, kernels) plus 3% of the GPU for fragmentation. */
    public static long defaultReserve(long capacity) {
        return 2 * GIB + capacity * 3 / 100;
    }

    /** Plans {@code req}; never throws for a job that does not fit (see {@link MemoryPlan#fits}). */
    public static MemoryPlan plan(PlanRequest req) {
        WeightInventory inv = WeightInventory.of(req.spec());
        ParamCounts counts = ParamCounts.of(inv);
        List<GpuBudget> budgets = budgets(req, inv);
        boolean chunkBuffer = chunked(req) && !exactOnDevice(req);
        int local = chunkBuffer ? localExperts(req) : 0;
        int chunk = Math.min(req.expertChunk(), local);
        long chunkBytes = chunkBuffer ? expertChunkBytes(req, inv) : 0;
        int maxChunk = 0;
        if (local > 0) {
            long most = local;
            for (GpuBudget b : budgets) {   // every chunked model instance on the GPU grows by one expert slot
                long perExpert = Math.max(1, chunkedInstances(b.role()) * slotCost(req));
                long room = b.headroom() + req.expertChunk() * perExpert;
                most = Math.min(most, room / perExpert);
            }
            maxChunk = (int) Math.max(0, most);
        }
        int maxPrompts = largest(p -> fits(req.withBatch(req.batch().withPrompts(p)), inv), 1 << 20);
        int maxMicro = largest(m -> fits(req.withBatch(req.batch().withMicroBatch(m)), inv), 1 << 14);
        return new MemoryPlan(req, counts, req.adapter().params(inv), budgets, chunk, chunkBytes, maxChunk,
                maxPrompts, maxMicro, notes(req, inv, counts));
    }

    /** Plans {@code req} and returns the plan if it fits; otherwise throws, with the table and what would fit. */
    public static MemoryPlan check(PlanRequest req) {
        MemoryPlan p = plan(req);
        if (!p.fits()) {
            throw new PlanRefusedException(p, FitAdvisor.suggest(p));
        }
        return p;
    }

    /**
     * The most decoder layers that can keep their forward activations under recompute (the last ones:
     * backward reaches them first and frees them first) with everything else as {@code req} asks: each
     * kept layer is one recomputed forward less per step. 0 without recompute, or when not even one fits.
     */
    public static int maxKeptLayers(PlanRequest req) {
        if (!req.recompute()) {
            return 0;
        }
        WeightInventory inv = WeightInventory.of(req.spec());
        return largest(k -> fits(req.withKeptLayers(k), inv), req.spec().numLayers());
    }

    /** As {@link #maxKeptLayers(PlanRequest)} for a GPU of one {@code role} alone (a training-only GPU, say). */
    public static int maxKeptLayers(PlanRequest req, GpuRole role) {
        if (!req.recompute()) {
            return 0;
        }
        return largest(k -> budgetOf(req.withKeptLayers(k), role).fits(), req.spec().numLayers());
    }

    static boolean fits(PlanRequest req, WeightInventory inv) {
        for (GpuBudget b : budgets(req, inv)) {
            if (!b.fits()) {
                return false;
            }
        }
        return true;
    }

    /** The largest n in [1, cap] with ok(n), for ok monotone (true up to some n); 0 if ok(1) is false. */
    static int largest(IntPredicate ok, int cap) {
        if (!ok.test(1)) {
            return 0;
        }
        int lo = 1;
        int hi = 2;
        while (hi <= cap && ok.test(hi)) {
            lo = hi;
            hi *= 2;
        }
        hi = Math.min(hi, cap + 1);
        while (hi - lo > 1) {   // ok(lo), !ok(hi) or hi beyond cap
            int mid = (lo + hi) >>> 1;
            if (ok.test(mid)) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        return lo;
    }

    static List<GpuBudget> budgets(PlanRequest req, WeightInventory inv) {
        List<GpuBudget> out = new ArrayList<>();
        for (GpuRole role : req.layout().roles()) {
            out.add(budget(req, inv, role));
        }
        return out;
    }

    /**
     * The budget of one GPU of {@code req} that has {@code role}, whatever roles the layout gives:
     * e.g. {@link GpuRole#TRAIN} on a colocated layout is a GPU of the same group that only trains
     * (as a training benchmark runs), without the rollout's slots, KV cache and buffers.
     */
    public static GpuBudget budgetOf(PlanRequest req, GpuRole role) {
        return budget(req, WeightInventory.of(req.spec()), role);
    }

    /**
     * True when routed experts are stored quantized and dequantized chunk by chunk: an adapter job
     * on an architecture with the chunked path ({@link MoeWorkingSet#hasChunkedPath}).
     */
    static boolean chunked(PlanRequest req) {
        return MoeWorkingSet.hasChunkedPath(req.spec()) && req.base().of(ParamFamily.ROUTED_EXPERTS).isQuantized()
                && !req.adapter().isFull();
    }

    /**
     * Whether the request is for the CUDA backend in exact mode, whose expert products read the quantized experts as
     * stored (no dequantization chunk) and whose kernels keep their own scratch ({@link #kernelScratchBytes}).
     */
    static boolean exactOnDevice(PlanRequest req) {
        return req.exact() && !req.node().hostMemory();
    }

    /** Routed experts of one MoE layer that one GPU holds; 0 for a dense model. */
    static int localExperts(PlanRequest req) {
        ModelSpec s = req.spec();
        return s.isMoe() ? s.moe().numExperts() / req.layout().expertParallel() : 0;
    }

    /**
     * Bytes one more expert in the chunk costs a GPU that trains and rolls out, in both the trainer's
     * model and the rollout engine's (see {@link #slotCost}).
     */
    static long expertChunkBytes(PlanRequest req, WeightInventory inv) {
        return req.spec().isMoe() ? 2 * slotCost(req) : 0;
    }

    /**
     * Bytes one more expert in the chunk costs one model instance: its slot in the dequantization
     * buffers, or on the host's grouped path its f32 {@code [I, h]} in the per-product temporary
     * (see {@link MoeWorkingSet}).
     */
    private static long slotCost(PlanRequest req) {
        ModelSpec s = req.spec();
        int ep = req.layout().expertParallel();
        boolean device = !req.node().hostMemory();
        long slot = MoeWorkingSet.slotBytes(s, ep, req.adapter(), device);
        return slot > 0 ? slot : (long) s.moe().moeIntermediateSize() * s.hiddenSize() * 4;
    }

    /** Model instances on a GPU of {@code role} that run the chunked experts: the trainer's and the rollout's. */
    private static int chunkedInstances(GpuRole role) {
        return (role.trains() ? 1 : 0) + (role.rollsOut() ? 1 : 0);
    }

    private static GpuBudget budget(PlanRequest req, WeightInventory inv, GpuRole role) {
        ModelSpec s = req.spec();
        NodeSpec node = req.node();
        ParallelLayout lay = req.layout();
        int g = groupSize(req, role);
        int ep = lay.expertParallel();
        int tp = lay.tensorParallel();
        int dp = g / tp;
        boolean full = req.adapter().isFull();
        BatchShape batch = req.batch();
        Map<MemoryCategory, Long> b = new EnumMap<>(MemoryCategory.class);

        // Base weights: experts spread over EP, projections/embedding/head over TP, vectors replicated.
        // Full training shards everything over the group (ZeRO-3) instead.
        long base = 0;
        long largestQuantizedOther = 0;
        long largestLayerBf16 = 0;
        for (WeightGroup w : inv.main()) {
            long bytes = req.base().bytes(w);
            if (full) {
                base += ceil(bytes, g);
            } else if (w.family() == ParamFamily.ROUTED_EXPERTS) {
                base += bytes / ep;
            } else if (w.shape().length == 2 && tpSplit(w.family())) {
                base += ceil(bytes, tp);
            } else {
                base += bytes;
            }
            if (w.linear() && w.family() != ParamFamily.ROUTED_EXPERTS && req.base().of(w.family()).isQuantized()) {
                largestQuantizedOther = Math.max(largestQuantizedOther, ceil(w.numelEach() * 2, tp));
            }
        }
        if (full) {
            largestLayerBf16 = largestLayerBf16(inv);
        }
        b.put(MemoryCategory.BASE_WEIGHTS, base);

        // Dequantization: per model instance that runs the chunked path, one bf16 buffer of C expert
        // matrices on a device's grouped path (none on the host's, whose temporary is an activation),
        // else one buffer of C f32 expert slots that the instance's MoE layers share; the largest other quantized matrix into
        // a double-buffered bf16 copy, and in exact mode on a device into an f32 one as well.
        long dequant = 0;
        if (full) {
            dequant = 2 * largestLayerBf16;     // all-gather buffers of one layer's shards, double-buffered
        } else {
            if (chunked(req) && !exactOnDevice(req)) {
                dequant += chunkedInstances(role) * MoeWorkingSet.dequantBytes(s, req.expertChunk(), ep, req.adapter(),
                        !node.hostMemory());
            }
            dequant += 2 * largestQuantizedOther;
            if (exactOnDevice(req)) {
                dequant += 2 * largestQuantizedOther;   // exact mode's products dequantize it to f32 (twice its bf16 bytes)
            }
        }
        b.put(MemoryCategory.DEQUANT_BUFFERS, dequant);

        // Adapter: expert adapters live with their experts; the rest is split by TP.
        long adapterParams = 0;
        long denseRotations = 0;   // an OFT adapter's rotation blocks outside the routed experts, elements
        for (WeightGroup w : inv.main()) {
            long p = req.adapter().paramsFor(w);
            adapterParams += full ? ceil(p, g) : w.family() == ParamFamily.ROUTED_EXPERTS ? p / ep : ceil(p, tp);
            if (req.adapter() instanceof AdapterSpec.Oft o && w.family() != ParamFamily.ROUTED_EXPERTS) {
                denseRotations += ceil(o.rotationElementsFor(w), tp);
            }
        }
        int pBytes = req.adapter().dtype().bytes();
        boolean device = !node.hostMemory();
        if (full) {
            b.put(MemoryCategory.ADAPTER_GRADS, role.trains() ? adapterParams * 2 : 0);
            b.put(MemoryCategory.OPTIMIZER_STATE, role.trains() ? adapterParams * 12 : 0);
        } else {
            long slot = adapterParams * pBytes;
            // The trainer holds its own adapter; the rollout engine two slots (active version v, incoming
            // v+1). An OFT adapter also keeps the rotation blocks of its projections outside the routed
            // experts (stored·b² f32 beside stored·b(b−1)/2 parameters), built once per version in a
            // slot and once per step in training; the experts' are rebuilt per call.
            long heldBytes = denseRotations * DType.F32.bytes();
            int slots = (role.trains() ? 1 : 0) + (role.rollsOut() ? 2 : 0);
            b.put(MemoryCategory.ADAPTER_PARAMS, slots * (slot + heldBytes));
            b.put(MemoryCategory.ADAPTER_GRADS, role.trains() ? slot : 0);
            long perParam = 8 + (req.adapter().dtype() == DType.BF16 ? 4 : 0);   // m, v f32 (+ f32 master)
            b.put(MemoryCategory.OPTIMIZER_STATE, role.trains() ? adapterParams * perParam : 0);
        }

        // Rollout: every sequence of the step decodes at once, spread over the data-parallel ranks.
        long seqsPerRank = rolloutSequencesPerRank(req, role);
        long vocabShard = ceil(s.vocabSize(), tp);
        long kv = 0;
        long logits = 0;
        long scratch = 0;
        if (role.rollsOut()) {
            // the engine's paged pool; DeepSeek V4's decode state beside it (its pool holds no rows), f32 in the
            // allocations the model makes for it whatever the cache dtype
            kv = (s.deepseekV4() != null ? seqsPerRank * org.orbitrl.model.arch.dsv4.DeepseekV4Model.decodeStateBytes(s, batch.seqLen())
                    : KvCacheLayout.pagedPoolBytes(s, seqsPerRank, batch.seqLen(), rolloutBatchTokens(req, seqsPerRank),
                    req.kvDtype()))
                    / KvCacheLayout.tensorParallelSplit(s, tp);
            logits += seqsPerRank * vocabShard * 12;            // f32 logits + sort keys + indices for top-p
            scratch += ActivationModel.forwardScratchBytes(inv, prefillTokens(req, seqsPerRank), tp);
            if (device && capturesDecodeSteps(req)) {
                scratch += DecodeGraphBudget.engineBytes(s, seqsPerRank, tp);   // the captured decode steps' arenas
            }
        }
        b.put(MemoryCategory.KV_CACHE, kv);

        // Training: one micro-batch of full sequences per data-parallel rank.
        long trainTokens = role.trains() ? (long) batch.microBatch() * batch.seqLen() : 0;
        long activations = scratch;
        if (role.trains()) {
            int chunk = chunked(req) ? req.expertChunk() : 0;
            activations += ActivationModel.trainBytes(inv, req.adapter(), trainTokens, batch.microBatch(),
                    req.recompute() ? req.keptLayers() : s.numLayers(), tp, ep, device, chunk,
                    req.recompute() && req.offloadInputs());
            logits += Math.min(trainTokens, req.logitsChunkTokens()) * vocabShard * 8;  // f32 logits and their gradient
        }
        activations += kernelScratchBytes(req, role);
        b.put(MemoryCategory.ACTIVATIONS, activations);
        b.put(MemoryCategory.LOGITS, logits);

        // Communication: NCCL's own buffers, expert all-to-all (dispatch and combine, send and receive),
        // the adapter gradient all-reduce bucket, and the adapter staging slot between split groups.
        long comm = 0;
        if (g > 1) {
            comm += NCCL_FIXED;
        }
        if (ep > 1 && s.isMoe()) {
            long tokens = Math.max(trainTokens, Math.max(seqsPerRank, prefillTokens(req, seqsPerRank)));
            comm += (long) Math.ceil(4.0 * tokens * s.moe().topK() * s.hiddenSize() * 2 * ActivationModel.EXPERT_IMBALANCE);
        }
        if (role.trains() && dp > 1) {
            comm += Math.min(adapterParams, GRAD_BUCKET_PARAMS) * 4;
        }
        if (!lay.colocated() && !full) {
            comm += adapterParams * pBytes;
        }
        b.put(MemoryCategory.COMM_BUFFERS, comm);

        b.put(MemoryCategory.RUNTIME_RESERVE, req.reserveBytes() >= 0 ? req.reserveBytes() : defaultReserve(node.bytesPerGpu()));
        return new GpuBudget(role, g, b, node.bytesPerGpu());
    }

    /**
     * The part of a GPU's planned activations that the CUDA backend keeps for its own kernels (see
     * {@link KernelScratch}): the trainer's while the GPU trains, plus the rollout engine's (a backend of
     * its own) while it rolls out; 0 on the host.
     */
    public static long kernelScratchBytes(PlanRequest req, GpuRole role) {
        if (req.node().hostMemory()) {
            return 0;
        }
        ModelSpec s = req.spec();
        int tp = req.layout().tensorParallel();
        long bytes = 0;
        if (role.trains()) {
            long trainTokens = (long) req.batch().microBatch() * req.batch().seqLen();
            bytes += req.exact()
                    ? KernelScratch.exactTrainBytes(s, trainTokens, ceil(s.vocabSize(), tp), Math.toIntExact(req.batch().seqLen()), tp)
                    : KernelScratch.trainBytes(s, trainTokens, Math.min(trainTokens, req.logitsChunkTokens()),
                    ceil(s.vocabSize(), tp), Math.toIntExact(req.batch().seqLen()), tp);
        }
        if (role.rollsOut()) {
            long seqsPerRank = rolloutSequencesPerRank(req, role);
            bytes += req.exact() ? KernelScratch.exactRolloutBytes(s, prefillTokens(req, seqsPerRank), seqsPerRank)
                    : KernelScratch.rolloutBytes(s, prefillTokens(req, seqsPerRank), seqsPerRank, req.batch().promptLen(), tp);
        }
        return bytes;
    }

    /** GPUs in the group of {@code role}: all of them when colocated; a role off the layout gets the colocated group. */
    private static int groupSize(PlanRequest req, GpuRole role) {
        ParallelLayout lay = req.layout();
        return lay.colocated() ? req.node().gpus() : lay.groupSize(role, req.node());
    }

    /**
     * Whether rollout captures its decode steps as graphs and so keeps their arenas: a model whose decode state sits in
     * the paged pool (not DeepSeek V4's own), on one GPU a model (tensor and expert parallelism exchange through the
     * host), unless the job asks for none ({@code sampling.decode_graphs: off}).
     */
    static boolean capturesDecodeSteps(PlanRequest req) {
        return req.decodeGraphs() && req.spec().deepseekV4() == null && req.layout().tensorParallel() == 1
                && req.layout().expertParallel() == 1;
    }

    /**
     * Sequences one data-parallel rank of {@code role} decodes at once: the samples of its share of the step's prompts
     * (shares of whole prompts, the largest), or every sequence where each rank rolls out all of them
     * ({@link PlanRequest#rolloutReplicated}).
     */
    private static long rolloutSequencesPerRank(PlanRequest req, GpuRole role) {
        if (!role.rollsOut()) {
            return 0;
        }
        int ranks = req.rolloutReplicated() ? 1 : groupSize(req, role) / req.layout().tensorParallel();
        return ceil(req.batch().prompts(), ranks) * req.batch().samplesPerPrompt();
    }

    /** Tokens the rollout engine prefills at once: its sequences' prompts, at most the prefill chunk. */
    private static long prefillTokens(PlanRequest req, long sequences) {
        return Math.min(sequences * req.batch().promptLen(), rolloutBatchTokens(req, sequences));
    }

    /** The new tokens one rollout forward runs at most, for an engine of {@code sequences} sequences. */
    public static long rolloutBatchTokens(PlanRequest req, long sequences) {
        return req.prefillChunkTokens() == PlanRequest.ENGINE_PREFILL ? KvCacheLayout.engineBatchTokens(sequences)
                : req.prefillChunkTokens();
    }

    private static boolean tpSplit(ParamFamily f) {
        return f == ParamFamily.ATTENTION || f == ParamFamily.DENSE_MLP || f == ParamFamily.SHARED_EXPERTS
                || f == ParamFamily.EMBEDDING || f == ParamFamily.OUTPUT_HEAD;
    }

    /** bf16 bytes of the largest decoder layer (for full training's all-gather buffer). */
    private static long largestLayerBf16(WeightInventory inv) {
        ModelSpec s = inv.spec();
        long perLayer = 0;
        long expertsPerLayer = 0;
        for (WeightGroup w : inv.main()) {
            if (w.family() == ParamFamily.EMBEDDING || w.family() == ParamFamily.OUTPUT_HEAD) {
                continue;
            }
            if (w.family() == ParamFamily.ROUTED_EXPERTS) {
                expertsPerLayer += w.numel() / Math.max(1, s.numMoeLayers());
            } else {
                perLayer += w.numel() / s.numLayers();
            }
        }
        return 2 * (perLayer + expertsPerLayer);
    }

    private static List<String> notes(PlanRequest req, WeightInventory inv, ParamCounts counts) {
        List<String> n = new ArrayList<>();
        if (counts.mtp() > 0) {
            n.add("The " + req.spec().numNextnPredictLayers() + " multi-token-prediction layer(s) ("
                    + Bytes.params(counts.mtp()) + " parameters) are not loaded: RL does not use them.");
        }
        if (req.adapter().isFull()) {
            n.add("Full-parameter AdamW: bf16 weights and gradients, f32 moments and master, all sharded over the GPUs "
                    + "(ZeRO-3); shown for comparison, Orbit trains adapters only.");
        }
        if (req.spec().isMoe()) {
            n.add("Routed-expert activations and all-to-all buffers assume up to " + ActivationModel.EXPERT_IMBALANCE
                    + "x the even share of routed tokens on one GPU.");
        }
        int window = KvCacheLayout.windowPoolWindow(req.spec());
        if (window > 0) {
            int sliding = 0;
            for (int i = 0; i < req.spec().numLayers(); i++) {
                sliding += req.spec().attentionKind(i) == org.orbitrl.model.spec.AttentionKind.SLIDING ? 1 : 0;
            }
            long seqs = rolloutSequencesPerRank(req, req.layout().colocated() ? GpuRole.COLOCATED : GpuRole.ROLLOUT);
            n.add("The " + sliding + " sliding-window layers keep a sequence's last " + window + " positions, not its "
                    + req.batch().seqLen() + ", in a window pool of their own during rollout: "
                    + KvCacheLayout.windowBlocks(seqs, req.batch().seqLen(), window, rolloutBatchTokens(req, seqs))
                    + " blocks of " + KvCacheLayout.PAGED_BLOCK_TOKENS + " positions a rollout GPU (running windows and one"
                    + " forward's prefill) against the full layers' " + KvCacheLayout.pagedBlocks(seqs, req.batch().seqLen()) + ".");
        }
        if (!req.node().hostMemory() && capturesDecodeSteps(req)) {
            long seqs = rolloutSequencesPerRank(req, req.layout().colocated() ? GpuRole.COLOCATED : GpuRole.ROLLOUT);
            n.add("Rollout's captured decode steps keep their working sets in arenas of their own, at most "
                    + Bytes.format(DecodeGraphBudget.engineBytes(req.spec(), seqs, req.layout().tensorParallel()))
                    + " a rollout GPU (" + DecodeGraphBudget.LARGEST_STEPS + " of its largest step's; the least recently"
                    + " replayed are closed beyond it), counted in its activations.");
        }
        if (req.layout().colocated()) {
            n.add("Rollout and training share each GPU and may run at once: their buffers are added.");
        }
        if (req.layout().expertParallel() > 1 && req.layout().colocated()) {
            n.add(req.rolloutReplicated()
                    ? "Every GPU rolls out every sequence of the step (a job split by experts runs its ranks in lockstep over"
                    + " the same requests): each holds the whole step's KV cache."
                    : "This plan gives each GPU its share of the step's prompts to roll out; the RL runner runs a job split"
                    + " by experts with every GPU rolling out every sequence (its ranks in lockstep), as `orbit plan --job`"
                    + " plans a job file.");
        }
        String type = req.spec().modelType();
        if ((req.layout().expertParallel() > 1 || req.layout().tensorParallel() > 1)
                && (type.equals("deepseek_v4") || type.equals("gpt_oss"))) {
            n.add("The runtime has no expert- or tensor-parallel form of " + type + " yet: it loads on one device, and a"
                    + " job with this layout is refused when it is to run. This plan sizes the layout.");
        }
        if (req.recompute() && req.offloadInputs() && !req.node().hostMemory()) {
            long tokens = (long) req.batch().microBatch() * req.batch().seqLen();
            n.add("The recomputed layers' inputs wait in host memory: " + Bytes.format(ActivationModel.offloadedBytes(
                    req.spec(), tokens, req.keptLayers())) + " of host memory (off the Java heap) per training GPU.");
        }
        return n;
    }

    private static long ceil(long a, long b) {
        return (a + b - 1) / b;
    }
}
