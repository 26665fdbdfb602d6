package org.orbitrl.memory.plan;

import java.nio.file.Path;
import org.orbitrl.kernels.DType;
import org.orbitrl.model.spec.ModelSpec;

/**
 * Everything the planner needs to size a job on a node.
 *
 * @param spec               the model
 * @param configPath         where the spec was read from (for the authors' stated counts), or null
 * @param base               storage format of the frozen base, per family
 * @param adapter            what trains
 * @param batch              shape of one RL step
 * @param node               the GPUs
 * @param layout             how the job spreads over them
 * @param recompute          recompute each layer's activations in backward instead of keeping them
 * @param expertChunk        routed experts dequantized into the bf16 chunk buffer at once
 * @param kvDtype            element type of the rollout KV cache ({@code BF16} or {@code F8E4M3})
 * @param logitsChunkTokens  tokens whose logits the trainer materializes at once (log-probs are
 *                           computed chunk by chunk)
 * @param prefillChunkTokens tokens the rollout engine prefills at once; {@link #ENGINE_PREFILL} (0): as the runner's
 *                           engines do ({@link KvCacheLayout#engineBatchTokens}), by the sequences each decodes
 * @param reserveBytes       runtime reserve per GPU; negative for the default policy
 *                           ({@link MemoryPlanner#defaultReserve})
 * @param keptLayers         with {@code recompute}, the last decoder layers that keep their forward
 *                           activations instead of being recomputed in backward (0: every layer is
 *                           recomputed; the model's layer count: none is); see
 *                           {@link MemoryPlanner#maxKeptLayers}
 * @param exact              the CUDA backend in exact mode ({@code -Dorbit.cuda.exact=true}): its kernels keep
 *                           other scratch than the default ones ({@code KernelScratch})
 * @param offloadInputs      with {@code recompute}, the recomputed layers' inputs wait in host memory between the
 *                           forward and their layer's backward ({@code memory.offload_inputs}): a device holds one at a
 *                           time
 * @param rolloutReplicated  every GPU of a model-parallel group rolls out every sequence of the step (the runtime's
 *                           expert-parallel jobs run their ranks in lockstep over the same requests), rather than its
 *                           data-parallel share
 * @param decodeGraphs       rollout captures its decode steps as graphs ({@code sampling.decode_graphs} not {@code off}),
 *                           where it can at all (see {@code MemoryPlanner.capturesDecodeSteps}): their arenas are planned
 */
public record PlanRequest(ModelSpec spec, Path configPath, BaseFormat base, AdapterSpec adapter, BatchShape batch,
                          NodeSpec node, ParallelLayout layout, boolean recompute, int expertChunk, DType kvDtype,
                          int logitsChunkTokens, int prefillChunkTokens, long reserveBytes, int keptLayers, boolean exact,
                          boolean offloadInputs, boolean rolloutReplicated, boolean decodeGraphs) {

    /** {@code prefillChunkTokens} of a rollout engine as the runner makes it: {@link KvCacheLayout#engineBatchTokens}. */
    public static final int ENGINE_PREFILL = 0;

    /** Experts per chunk unless asked otherwise. */
    public static final int DEFAULT_EXPERT_CHUNK = 8;

    public PlanRequest {
        if (spec == null || base == null || adapter == null || batch == null || node == null || layout == null) {
            throw new IllegalArgumentException("a plan needs a model, base format, adapter, batch shape, node and layout");
        }
        if (expertChunk <= 0) {
            throw new IllegalArgumentException("expert chunk must be a positive number of experts, got " + expertChunk);
        }
        if (kvDtype != DType.BF16 && kvDtype != DType.F8E4M3 && kvDtype != DType.F32) {
            throw new IllegalArgumentException("KV cache dtype must be bf16, fp8 or f32, not " + kvDtype);
        }
        if (logitsChunkTokens <= 0 || prefillChunkTokens < 0) {
            throw new IllegalArgumentException("logits and prefill chunks must be positive token counts, got "
                    + logitsChunkTokens + " and " + prefillChunkTokens);
        }
        adapter = adapter.on(spec);   // an adapter named by modules: the families they reach in this model
        if (adapter.isFull() && base.anyQuantized()) {
            throw new IllegalArgumentException("full-parameter training needs a bf16 base, not " + base.name());
        }
        if (keptLayers < 0 || keptLayers > spec.numLayers()) {
            throw new IllegalArgumentException("kept layers must be between 0 and the model's " + spec.numLayers()
                    + " layers, got " + keptLayers);
        }
        layout.validate(spec, node);
    }

    /** A request for the default kernels (not exact mode). */
    public PlanRequest(ModelSpec spec, Path configPath, BaseFormat base, AdapterSpec adapter, BatchShape batch,
                       NodeSpec node, ParallelLayout layout, boolean recompute, int expertChunk, DType kvDtype,
                       int logitsChunkTokens, int prefillChunkTokens, long reserveBytes, int keptLayers) {
        this(spec, configPath, base, adapter, batch, node, layout, recompute, expertChunk, kvDtype, logitsChunkTokens,
                prefillChunkTokens, reserveBytes, keptLayers, false, false, false, true);
    }

    /** A request in which every layer is recomputed under {@code recompute} (no kept layers). */
    public PlanRequest(ModelSpec spec, Path configPath, BaseFormat base, AdapterSpec adapter, BatchShape batch,
                       NodeSpec node, ParallelLayout layout, boolean recompute, int expertChunk, DType kvDtype,
                       int logitsChunkTokens, int prefillChunkTokens, long reserveBytes) {
        this(spec, configPath, base, adapter, batch, node, layout, recompute, expertChunk, kvDtype, logitsChunkTokens,
                prefillChunkTokens, reserveBytes, 0);
    }

    /**
     * Defaults for {@code spec} on {@code node}: the checkpoint's own base format, LoRA rank 32 on every
     * projection, 64 prompts x 8 samples of 1024 + 4096 tokens, micro-batch 1, colocated with experts
     * spread over all GPUs, activations recomputed, chunks of {@value #DEFAULT_EXPERT_CHUNK} experts, bf16 KV cache.
     */
    public static PlanRequest defaults(ModelSpec spec, Path configPath, NodeSpec node) {
        return new PlanRequest(spec, configPath, BaseFormat.parse("native", spec), AdapterSpec.parse("lora:32"),
                new BatchShape(64, 8, 1024, 4096, 1), node, ParallelLayout.auto(spec, node, 0, 0), true,
                DEFAULT_EXPERT_CHUNK, DType.BF16, 2048, ENGINE_PREFILL, -1);
    }

    /** This request with the base format changed. */
    public PlanRequest withBase(BaseFormat b) {
        return new PlanRequest(spec, configPath, b, adapter, batch, node, layout, recompute, expertChunk, kvDtype,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, keptLayers, exact, offloadInputs, rolloutReplicated, decodeGraphs);
    }

    /** This request with the adapter changed. */
    public PlanRequest withAdapter(AdapterSpec a) {
        return new PlanRequest(spec, configPath, base, a, batch, node, layout, recompute, expertChunk, kvDtype,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, keptLayers, exact, offloadInputs, rolloutReplicated, decodeGraphs);
    }

    /** This request with the batch shape changed. */
    public PlanRequest withBatch(BatchShape b) {
        return new PlanRequest(spec, configPath, base, adapter, b, node, layout, recompute, expertChunk, kvDtype,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, keptLayers, exact, offloadInputs, rolloutReplicated, decodeGraphs);
    }

    /** This request with the node and layout changed. */
    public PlanRequest withNode(NodeSpec n, ParallelLayout l) {
        return new PlanRequest(spec, configPath, base, adapter, batch, n, l, recompute, expertChunk, kvDtype,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, keptLayers, exact, offloadInputs, rolloutReplicated, decodeGraphs);
    }

    /** This request with the layout changed. */
    public PlanRequest withLayout(ParallelLayout l) {
        return withNode(node, l);
    }

    /** This request with recompute on or off changed. */
    public PlanRequest withRecompute(boolean r) {
        return new PlanRequest(spec, configPath, base, adapter, batch, node, layout, r, expertChunk, kvDtype,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, keptLayers, exact, offloadInputs, rolloutReplicated, decodeGraphs);
    }

    /** This request with the kept layers under recompute changed (see {@link #keptLayers}). */
    public PlanRequest withKeptLayers(int layers) {
        return new PlanRequest(spec, configPath, base, adapter, batch, node, layout, recompute, expertChunk, kvDtype,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, layers, exact, offloadInputs, rolloutReplicated, decodeGraphs);
    }

    /** This request with the expert chunk changed. */
    public PlanRequest withExpertChunk(int c) {
        return new PlanRequest(spec, configPath, base, adapter, batch, node, layout, recompute, c, kvDtype,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, keptLayers, exact, offloadInputs, rolloutReplicated, decodeGraphs);
    }

    /** This request with the KV cache dtype changed. */
    public PlanRequest withKvDtype(DType d) {
        return new PlanRequest(spec, configPath, base, adapter, batch, node, layout, recompute, expertChunk, d,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, keptLayers, exact, offloadInputs, rolloutReplicated, decodeGraphs);
    }

    /** This request with the runtime reserve (negative: the default policy) changed. */
    public PlanRequest withReserve(long bytes) {
        return new PlanRequest(spec, configPath, base, adapter, batch, node, layout, recompute, expertChunk, kvDtype,
                logitsChunkTokens, prefillChunkTokens, bytes, keptLayers, exact, offloadInputs, rolloutReplicated, decodeGraphs);
    }

    /** This request with the logits and prefill chunks changed. */
    public PlanRequest withChunks(int logitsTokens, int prefillTokens) {
        return new PlanRequest(spec, configPath, base, adapter, batch, node, layout, recompute, expertChunk, kvDtype,
                logitsTokens, prefillTokens, reserveBytes, keptLayers, exact, offloadInputs, rolloutReplicated, decodeGraphs);
    }

    /** This request for the CUDA backend in exact mode (or not). */
    public PlanRequest withExact(boolean e) {
        return new PlanRequest(spec, configPath, base, adapter, batch, node, layout, recompute, expertChunk, kvDtype,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, keptLayers, e, offloadInputs, rolloutReplicated, decodeGraphs);
    }

    /** This request with the recomputed layers' inputs waiting in host memory (or not); see {@link #offloadInputs}. */
    public PlanRequest withOffloadedInputs(boolean o) {
        return new PlanRequest(spec, configPath, base, adapter, batch, node, layout, recompute, expertChunk, kvDtype,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, keptLayers, exact, o, rolloutReplicated, decodeGraphs);
    }

    /** This request with every GPU of a model-parallel group rolling out every sequence (or not); see {@link #rolloutReplicated}. */
    public PlanRequest withRolloutReplicated(boolean r) {
        return new PlanRequest(spec, configPath, base, adapter, batch, node, layout, recompute, expertChunk, kvDtype,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, keptLayers, exact, offloadInputs, r, decodeGraphs);
    }

    /** This request with rollout's decode steps captured as graphs (or not); see {@link #decodeGraphs}. */
    public PlanRequest withDecodeGraphs(boolean g) {
        return new PlanRequest(spec, configPath, base, adapter, batch, node, layout, recompute, expertChunk, kvDtype,
                logitsChunkTokens, prefillChunkTokens, reserveBytes, keptLayers, exact, offloadInputs, rolloutReplicated, g);
    }
}
