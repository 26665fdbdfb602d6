package org.orbitrl.memory.plan;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.EnumSet;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.model.spec.ModelSpec;

/** The planner's byte counts, against hand arithmetic and against files written by other tools. */
class MemoryPlannerTest {
    /**
     * What the CUDA backend keeps for its kernels while training the qwen3_moe fixture on 16 tokens
     * (one sequence of 16): the bf16 staging of the head's output gradient [16, 256] (4096 values,
     * the largest operand); the attention backward's lse and delta 2·16·4 and, its 2 query heads a kv
     * head split in 2 (one key tile x 2 kv heads is far below 1024 blocks), partial dk and dv
     * 2·16·2·(16 + 16), f32; cos and sin [256 positions, 8] f32. A host keeps none.
     */
    private static final long KERNEL_SCRATCH = 4096 * 2 + (2 * 16 * 4 + 2 * 16 * 2 * 32) * 4 + 2 * 256 * 8 * 4;
    /**
     * What the rollout engine's backend keeps beside it on the same GPU: the bf16 staging of its
     * largest forward operand over a prefill of 2 sequences x 8 prompt tokens ([16, 64], rounded up to
     * the allocator's 1024 values) and its own cos and sin [256, 8] f32.
     */
    private static final long ROLLOUT_SCRATCH = 1024 * 2 + 2 * 256 * 8 * 4;

    private static final long GIB = 1L << 30;

    /**
     * The Qwen3-MoE fixture (vocab 256, hidden 64, 2 layers, 4/2 heads of 16, 8 experts of 32, top-2)
     * on 2 GPUs of 2 GiB: INT4 experts over EP 2, LoRA rank 4, 2 prompts x 2 samples of 8+8 tokens.
     * Every expected number is worked out here from the shapes, not from the planner's code.
     */
    @Test
    void tinyFixturePlanMatchesHandArithmetic() {
        PlanRequest req = tinyFixtureRequest();
        MemoryPlan plan = MemoryPlanner.plan(req);
        GpuBudget b = plan.budget(GpuRole.COLOCATED);

        // Base: embedding and head 256x64 bf16; final norm 64; per layer two norms (64), q/o [64,64],
        // k/v [32,64], q_norm/k_norm (16), router [8,64], all bf16; experts INT4: gate_up [64,64] =
        // 64*32 B codes + 64*2 bf16 scales, down [64,32] = 64*16 + 64*1*2; 16 experts over EP 2.
        long layer = 2 * 128 + 2 * 8192 + 2 * 4096 + 2 * 32 + 1024;
        long expert = (64 * 32 + 64 * 2 * 2) + (64 * 16 + 64 * 2);
        assertEquals(2 * 32768 + 128 + 2 * layer + 16 * expert / 2, b.get(MemoryCategory.BASE_WEIGHTS));
        // Dequantization: one chunk buffer of 2 expert slots of gate, up and down [32, 64] f32, shared by
        // the 2 MoE layers, in the trainer's model and in the rollout engine's view.
        assertEquals(2 * 2 * 3 * 32 * 64 * 4, b.get(MemoryCategory.DEQUANT_BUFFERS));
        // LoRA r=4: q,o 4*(64+64), k,v 4*(32+64) per layer; per expert gate_up 4*(64+64) + down 4*(32+64),
        // 8 of 16 experts on this GPU. bf16: the trainer's copy and two rollout slots; bf16 grads; f32 m, v and master.
        long adapter = 2 * (2 * 512 + 2 * 384) + 8 * (512 + 384);
        assertEquals(10_752, adapter);
        assertEquals(3 * adapter * 2, b.get(MemoryCategory.ADAPTER_PARAMS));
        assertEquals(adapter * 2, b.get(MemoryCategory.ADAPTER_GRADS));
        assertEquals(adapter * 12, b.get(MemoryCategory.OPTIMIZER_STATE));
        // KV: 4 sequences over 2 data-parallel ranks of 16 tokens, 2 blocks of 16 positions each (one for a fork's copy),
        // in the engine's paged pool of at least 64 blocks; a position holds 2 layers x 2 KV heads x (16+16) x 2 B.
        assertEquals(64 * 16 * 2 * 2 * 32 * 2, b.get(MemoryCategory.KV_CACHE));
        // Logits: decode 2 sequences x 256 x (4+4+4); training 16 tokens x 256 x (4+4).
        assertEquals(2 * 256 * 12 + 16 * 256 * 8, b.get(MemoryCategory.LOGITS));
        // Training activations with recompute, f32 per token, temporaries released at their last use:
        // the 2 layer inputs, final norm input and output and the residual gradient (5*64), the
        // uploaded positions (1); one layer's tape: 3*64 + 3*(64+32) for norms, residual, q, k, v and
        // attention output, and the experts' 2*1.25/2 pairs of 2*64 + 3*32; the attention backward,
        // larger than the MoE's: the residual and attention-input gradients 2*64 beside v's and the
        // pre-norm q and k gradients 64 + 2*32, the projections' partial input gradient 64 and LoRA's
        // dy·B 4 beside (dy·B)·A 64. 16 tokens. Plus the rollout's prefill scratch of 16 tokens x 640
        // bf16 (no LoRA). Split by experts, rollout captures no decode steps: no arenas for them.
        double tape = 3 * 64 + 3 * 96 + 1.25 * (2 * 64 + 3 * 32);
        double perToken = 5 * 64 + 1 + tape + (2 * 64 + 64 + 2 * 32 + 64 + 4 + 64);
        assertEquals((long) (perToken * 16) * 4 + 16 * 640 * 2 + KERNEL_SCRATCH + ROLLOUT_SCRATCH,
                b.get(MemoryCategory.ACTIVATIONS));
        // Communication: NCCL 1 GiB; all-to-all 4 x 16 tokens x top-2 x 64 x 2 B x 1.25; f32 gradient bucket.
        assertEquals(GIB + 4 * 16 * 2 * 64 * 2 * 5 / 4 + adapter * 4, b.get(MemoryCategory.COMM_BUFFERS));
        assertEquals(0, b.get(MemoryCategory.RUNTIME_RESERVE));
        assertTrue(plan.fits());
        assertEquals(4, plan.maxSafeExpertChunk(), "all 4 local experts fit in the chunk buffer");
        assertEquals(2 * (2 * 512 + 2 * 384) + 16 * (512 + 384), plan.adapterParams(),
                "the whole model's adapter: attention of both layers, all 16 experts");
    }

    /**
     * The same fixture on one GPU, which holds every expert, so the MoE block runs grouped by expert:
     * a training GPU keeps one bf16 dequantization buffer of 2 halves of C expert matrices [32, 64]
     * for all layers with an f32 pad of one 256-row tile [256, 64] an expert, and the host none (its f32
     * temporary [C, 32·64] of a grouped product is an activation).
     * LoRA rank 4 on attention and experts, one sequence of 8+8 tokens, recompute, chunk 2.
     */
    @Test
    void groupedMoeOnOneGpuSharesOneBf16ChunkBuffer() {
        ModelSpec spec = TestModels.spec("fixtures/qwen3_moe");
        PlanRequest gpu = PlanRequest.defaults(spec, null, NodeSpec.parse("1x2GiB"))
                .withBase(BaseFormat.parse("int4")).withAdapter(AdapterSpec.parse("lora:4"))
                .withBatch(new BatchShape(1, 1, 8, 8, 1)).withLayout(ParallelLayout.colocated(1, 1))
                .withExpertChunk(2).withReserve(0);
        PlanRequest host = gpu.withNode(new NodeSpec(NodeSpec.HOST, 1, 1L << 40), ParallelLayout.colocated(1, 1));
        GpuBudget dev = MemoryPlanner.budgetOf(gpu, GpuRole.TRAIN);
        GpuBudget cpu = MemoryPlanner.budgetOf(host, GpuRole.TRAIN);
        long slot = 2 * 32 * 64 * 2 + 256 * 64 * 4;   // two halves: chunk 2 of 8 experts overlaps dequantization
        assertEquals(2 * slot, dev.get(MemoryCategory.DEQUANT_BUFFERS));
        assertEquals(0, cpu.get(MemoryCategory.DEQUANT_BUFFERS));
        assertEquals(2 * 2 * slot, MemoryPlanner.budgetOf(gpu, GpuRole.COLOCATED).get(MemoryCategory.DEQUANT_BUFFERS),
                "the trainer's backend and the rollout's each keep one buffer");
        // f32 per token, temporaries released at their last use: the 2 layer inputs, final norm input
        // and output and the residual gradient (5*64), on the device an uploaded position (1) and the
        // pairs' bf16 rows 2*64/2; one layer's tape: 3*64 + 3*(64+32) and the MoE block's router
        // probabilities (8), 5 [k] tensors and 2 pairs of 2*64 + 3*32; the larger of the attention's
        // backward (2*64 + 64 + 2*32 + 64 + 4 + 64, the device's) and the MoE's (the host's): the post-norm gradient 64 beside, through
        // gate 2 pairs of the routing-weight gradient 1, dg and du 2*32 and dxs 64 (on the device,
        // which adds up's product into dxs, the larger moment), through up on the host 2 pairs of 1,
        // du 32 and dxs and the product's temporary 2*64 (the host's larger one), and the LoRA per
        // pair: on the device xa and dy·B 2*4 ((dy·B)·A accumulates into dxs in place); on the host
        // the 2*32*64 temporary spread over 16 tokens instead of the LoRA. 16 tokens.
        double tape = 3 * 64 + 3 * 96 + 8 + 5 * 2 + 2 * (2 * 64 + 3 * 32);
        double devGrads = 2 * (1 + 2 * 32 + 64);
        double hostGrads = 2 * (1 + 32 + 2 * 64);
        double attention = 2 * 64 + 64 + 2 * 32 + 64 + 4 + 64;
        double devPerToken = 5 * 64 + 1 + 64 + tape + Math.max(attention, 64 + devGrads + 2 * (2 * 4));
        double hostPerToken = 5 * 64 + tape + 64 + hostGrads + 2 * 32 * 64 / 16.0;
        assertEquals((long) (devPerToken * 16) * 4 + KERNEL_SCRATCH, dev.get(MemoryCategory.ACTIVATIONS));
        assertEquals((long) (hostPerToken * 16) * 4, cpu.get(MemoryCategory.ACTIVATIONS));
        MemoryPlan plan = MemoryPlanner.plan(gpu);
        assertEquals(2 * slot, plan.expertChunkBytes(), "one more expert: two bf16 [32, 64] and its f32 pad in the trainer's and the rollout's buffer");
        assertEquals(8, plan.maxSafeExpertChunk(), "all 8 experts fit in the chunk buffer");
    }

    /**
     * With a BF16 base on one GPU, the base is exactly the bytes of the fixture's own bf16 checkpoint, less what the
     * model widens to f32 as it loads (see {@code RlPlanAgreementTest} for the held bytes).
     */
    @Test
    void bf16BaseEqualsTheCheckpointOnDisk() throws IOException {
        for (String arch : new String[] {"qwen3", "qwen3_moe", "deepseek_v3", "gpt_oss", "deepseek_v4"}) {
            ModelSpec spec = TestModels.spec("fixtures/" + arch);
            Map<String, long[]> file = SafetensorsHeader.read(TestModels.fixtures().resolve(arch).resolve("model.safetensors"));
            long fileBytes = 0;
            long fileBufferElems = 0;
            for (var e : file.entrySet()) {
                if (e.getKey().endsWith("e_score_correction_bias") || e.getKey().endsWith(".tid2eid")
                        || e.getKey().endsWith(".gate.bias") && arch.equals("deepseek_v4")) {
                    fileBufferElems += e.getValue()[0];
                } else {
                    fileBytes += e.getValue()[1];
                }
            }
            WeightInventory inv = WeightInventory.of(spec);
            long params = 0;
            for (WeightGroup g : inv.main()) {
                // a parameter held in f32 (a bias, a sink, V4's small tensors) is stored in bf16, as all of them are here
                params += g.buffer() ? 0 : g.f32() ? 2 * g.numel() : BaseFormat.bf16().bytes(g);
            }
            assertEquals(fileBytes, params, arch + ": bf16 bytes of the parameters");
            assertEquals(fileBufferElems, inv.bufferElements(), arch + ": saved buffer elements");
        }
    }

    /** LoRA parameter counts against the PEFT adapters stored with the fixtures (rank 4). */
    @Test
    void loraCountsMatchPeftAdapters() throws IOException {
        Map<String, EnumSet<ParamFamily>> targets = Map.of(
                "qwen3", EnumSet.of(ParamFamily.ATTENTION, ParamFamily.DENSE_MLP),
                "qwen3_moe", EnumSet.of(ParamFamily.ATTENTION, ParamFamily.ROUTED_EXPERTS),
                "deepseek_v3", EnumSet.of(ParamFamily.ATTENTION, ParamFamily.ROUTED_EXPERTS),
                "gpt_oss", EnumSet.of(ParamFamily.ATTENTION, ParamFamily.ROUTED_EXPERTS));
        for (var t : targets.entrySet()) {
            Path dir = TestModels.fixtures().resolve(t.getKey()).resolve("adapter");
            long peft = 0;
            for (long[] v : SafetensorsHeader.read(dir.resolve("adapter_model.safetensors")).values()) {
                peft += v[0];
            }
            long ours = new AdapterSpec.Lora(4, t.getValue(), DType.BF16).params(WeightInventory.of(TestModels.spec(
                    "fixtures/" + t.getKey())));
            assertEquals(peft, ours, t.getKey() + ": LoRA r=4 on " + t.getValue());
        }
    }

    @Test
    void oftCountsAreBlockGenerators() {
        // One [out, in] projection with in = 96, block 32: 3 blocks of 32*31/2 generators each.
        WeightGroup g = WeightGroup.linear("x", ParamFamily.ATTENTION, 40, 96, 5);
        assertEquals(5L * 3 * 32 * 31 / 2, AdapterSpec.parse("oft:32").paramsFor(g));
        assertEquals(0, AdapterSpec.parse("oft:32:experts").paramsFor(g));
        assertEquals(5L * 8 * (40 + 96), AdapterSpec.parse("lora:8").paramsFor(g));
    }

    /**
     * A block size that does not divide the input width moves to the nearest divisor, the lower one on a tie, as the
     * runtime's OFT layers (and PEFT) build it; one at least the width is one block of the whole width.
     */
    @Test
    void oftBlockSizesThatDoNotDivideTheWidthMoveToTheNearestDivisor() {
        WeightGroup g = WeightGroup.linear("x", ParamFamily.ATTENTION, 40, 96, 5);
        assertEquals(5L * 3 * 32 * 31 / 2, AdapterSpec.parse("oft:40").paramsFor(g), "40: 32 and 48 tie, 32 taken");
        assertEquals(5L * 2 * 48 * 47 / 2, AdapterSpec.parse("oft:45").paramsFor(g), "45: 48 is nearer than 32");
        assertEquals(5L * 8 * 12 * 11 / 2, AdapterSpec.parse("oft:11").paramsFor(g), "11: 12 is nearer than 8");
        assertEquals(5L * 96 * 95 / 2, AdapterSpec.parse("oft:100000").paramsFor(g), "wider than the layer: one block");
        var oft = (AdapterSpec.Oft) AdapterSpec.parse("oft:40");
        assertEquals(5L * 3 * 32 * 32, oft.rotationElementsFor(g), "the rotation blocks it builds: 3 of [32, 32]");

        // Qwen3-235B-A22B with blocks wider than every layer: one block of each projection's whole input width
        ModelSpec spec = TestModels.spec("models/qwen3-235b-a22b");
        WeightInventory inv = WeightInventory.of(spec);
        long whole = 0;
        for (WeightGroup w : inv.main()) {
            if (w.linear() && AdapterSpec.DEFAULT_TARGETS.contains(w.family())) {
                whole += w.cols() * (w.cols() - 1) / 2 * w.count();
            }
        }
        assertEquals(whole, AdapterSpec.parse("oft:100000").params(inv));
    }

    @Test
    void largestBatchIsTheEdgeOfFitting() {
        ModelSpec spec = TestModels.spec("models/qwen3-30b-a3b");
        PlanRequest req = PlanRequest.defaults(spec, null, NodeSpec.parse("1xH200"))
                .withBatch(new BatchShape(8, 8, 1024, 4096, 1));
        MemoryPlan p = MemoryPlanner.plan(req);
        assertTrue(p.fits(), "8 prompts fit");
        int max = p.maxPrompts();
        assertTrue(max > 1, "some prompts fit, got " + max);
        assertTrue(MemoryPlanner.plan(req.withBatch(req.batch().withPrompts(max))).fits());
        assertFalse(MemoryPlanner.plan(req.withBatch(req.batch().withPrompts(max + 1))).fits());
        int mb = p.maxMicroBatch();
        assertTrue(MemoryPlanner.plan(req.withBatch(req.batch().withMicroBatch(mb))).fits());
        assertFalse(MemoryPlanner.plan(req.withBatch(req.batch().withMicroBatch(mb + 1))).fits());
    }

    @Test
    void largestSafeChunkIsTheEdgeOfFitting() {
        ModelSpec spec = TestModels.spec("models/kimi-k2.6");
        // Squeeze the node so the chunk matters: a reserve that leaves room for only some experts.
        PlanRequest req = PlanRequest.defaults(spec, null, NodeSpec.parse("8x600GB")).withBase(BaseFormat.parse("int4"))
                .withAdapter(AdapterSpec.parse("lora:32")).withExpertChunk(1);
        long headroom = MemoryPlanner.plan(req).tightest().headroom();
        long perExpert = MemoryPlanner.plan(req).expertChunkBytes();
        // leave 10.5 experts' worth of headroom beyond the one planned
        PlanRequest tight = req.withReserve(MemoryPlanner.defaultReserve(req.node().bytesPerGpu()) + headroom - 10 * perExpert
                - perExpert / 2);
        MemoryPlan p = MemoryPlanner.plan(tight);
        assertEquals(11, p.maxSafeExpertChunk(), "1 planned + 10 more whole experts fit in the headroom");
        assertTrue(MemoryPlanner.plan(tight.withExpertChunk(11)).fits());
        assertFalse(MemoryPlanner.plan(tight.withExpertChunk(12)).fits());
    }

    @Test
    void splitLayoutGivesEachGroupItsOwnBase() {
        ModelSpec spec = TestModels.spec("models/qwen3-30b-a3b");
        PlanRequest req = PlanRequest.defaults(spec, null, NodeSpec.parse("8xH100"))
                .withLayout(ParallelLayout.split(4, 1, 4, 4));
        MemoryPlan p = MemoryPlanner.plan(req);
        GpuBudget roll = p.budget(GpuRole.ROLLOUT);
        GpuBudget train = p.budget(GpuRole.TRAIN);
        assertEquals(roll.get(MemoryCategory.BASE_WEIGHTS), train.get(MemoryCategory.BASE_WEIGHTS));
        assertEquals(0, roll.get(MemoryCategory.OPTIMIZER_STATE));
        assertEquals(0, train.get(MemoryCategory.KV_CACHE));
        assertEquals(2 * train.get(MemoryCategory.ADAPTER_PARAMS), roll.get(MemoryCategory.ADAPTER_PARAMS),
                "two rollout slots against one training copy");
        GpuBudget both = MemoryPlanner.plan(req.withLayout(ParallelLayout.colocated(4, 1))).budget(GpuRole.COLOCATED);
        assertEquals(3 * train.get(MemoryCategory.ADAPTER_PARAMS), both.get(MemoryCategory.ADAPTER_PARAMS),
                "a colocated GPU holds the trainer's copy and the two rollout slots");
        assertNotNull(p.tightest());
    }

    /**
     * The kernel scratch of the training bench's shape (Qwen3-30B-A3B, 8 x 2048 tokens, the head over all
     * 16,384 rows, one H200): the head's output gradient [16384, 151936] f32 would be 4.98 GB in bf16 and
     * is staged in 256 MiB = 268,435,456 B; the attention backward of one 2048-token sequence, 32/4 heads
     * of 128, split in 4 (64 key tiles x 4 kv heads x 4 = 1024 blocks): (2·2048·32 + 4·2048·4·256)·4 =
     * 34,078,720 B, and the tensor-core kernels' bf16 copies of q, dout and k, v: (2·2048·32·128 + 2·2048·4·128)·2
     * = 37,748,736 B; cos and sin [40960, 64] f32 = 20,971,520 B. Split by TP 2 over two H200s: the head's shard
     * and the heads halve, but the staging is still full and the attention backward of 16/2 heads splits in 8
     * (64 x 2 x 8 = 1024): (2·2048·16 + 8·2048·2·256)·4, copies (2·2048·16·128 + 2·2048·2·128)·2. The host keeps none.
     * A GPU that rolls out keeps the rollout backend's own: its largest forward operand over the
     * 8192-token prefill chunk, the attention output [8192, 32·128] f32 = 67,108,864 B in bf16, the
     * prefill attention's bf16 keys and values of one 1024-token prompt, 2·1024·4·128·2 = 2,097,152 B,
     * and its own RoPE tables; a colocated GPU keeps both.
     */
    @Test
    void kernelScratchOfTheTrainingBenchShape() {
        PlanRequest req = trainingBenchRequest();
        assertEquals(268_435_456L + 34_078_720L + 37_748_736L + 20_971_520L, MemoryPlanner.kernelScratchBytes(req, GpuRole.TRAIN));
        assertEquals(67_108_864L + 2_097_152L + 20_971_520L, MemoryPlanner.kernelScratchBytes(req, GpuRole.ROLLOUT));
        assertEquals(268_435_456L + 34_078_720L + 37_748_736L + 20_971_520L + 67_108_864L + 2_097_152L + 20_971_520L,
                MemoryPlanner.kernelScratchBytes(req, GpuRole.COLOCATED));
        PlanRequest tp2 = req.withNode(NodeSpec.parse("2xH200"), ParallelLayout.colocated(1, 2));
        assertEquals(268_435_456L + (2L * 2048 * 16 + 8L * 2048 * 2 * 256) * 4 + (2L * 2048 * 16 * 128 + 2L * 2048 * 2 * 128) * 2
                + 20_971_520L,
                MemoryPlanner.kernelScratchBytes(tp2, GpuRole.TRAIN));
        PlanRequest host = req.withNode(new NodeSpec(NodeSpec.HOST, 1, 1L << 40), ParallelLayout.colocated(1, 1));
        assertEquals(0, MemoryPlanner.kernelScratchBytes(host, GpuRole.TRAIN));
    }

    /**
     * The same shape in exact mode: no bf16 staging; the head's transposed bf16 plane for its activation gradient,
     * [151936, 2048] = 622,329,856 B; the products' split sums at their bound, 64 MiB = 67,108,864 B; the tiled attention
     * backward (split in 4 as above, no tensor-core copies), 34,078,720 B; the RoPE tables, 20,971,520 B. The rollout
     * backend: the split sums and its RoPE tables. No dequantization chunk (exact mode reads the experts as stored).
     */
    @Test
    void kernelScratchOfTheTrainingBenchShapeInExactMode() {
        PlanRequest req = trainingBenchRequest().withExact(true);
        assertEquals(622_329_856L + 67_108_864L + 34_078_720L + 20_971_520L, MemoryPlanner.kernelScratchBytes(req, GpuRole.TRAIN));
        assertEquals(67_108_864L + 20_971_520L, MemoryPlanner.kernelScratchBytes(req, GpuRole.ROLLOUT));
        assertEquals(0, MemoryPlanner.budgetOf(req, GpuRole.TRAIN).get(MemoryCategory.DEQUANT_BUFFERS));
        assertTrue(MemoryPlanner.budgetOf(req.withExact(false), GpuRole.TRAIN).get(MemoryCategory.DEQUANT_BUFFERS) > 0,
                "the default kernels' chunk buffer");
        assertEquals(0, MemoryPlanner.plan(req).expertChunk(), "no chunk to plan (or to advise smaller)");
        assertEquals(8, MemoryPlanner.plan(req.withExact(false)).expertChunk());
        long diff = MemoryPlanner.kernelScratchBytes(req, GpuRole.TRAIN)
                - MemoryPlanner.kernelScratchBytes(req.withExact(false), GpuRole.TRAIN);
        assertEquals(diff, trainActivations(req) - trainActivations(req.withExact(false)),
                "exact mode changes the activations by its kernels' scratch alone");
        PlanRequest host = req.withNode(new NodeSpec(NodeSpec.HOST, 1, 1L << 40), ParallelLayout.colocated(1, 1));
        assertEquals(0, MemoryPlanner.kernelScratchBytes(host, GpuRole.TRAIN));
    }

    /**
     * FP8 attention on the training bench's shape: the largest quantized matrix outside the experts is q_proj or o_proj,
     * 4096 x 2048 = 8,388,608 values, which the default kernels dequantize into a double-buffered bf16 copy (2 x 16 MiB)
     * and exact mode also into an f32 one (32 MiB more); the experts' chunk buffer only with the default kernels.
     */
    @Test
    void fp8AttentionDequantizesIntoBf16AndInExactModeF32() {
        PlanRequest int4 = trainingBenchRequest();
        PlanRequest fp8 = int4.withBase(BaseFormat.parse("experts=int4,attention=fp8"));
        long largest = 4096L * 2048;
        assertEquals(2 * largest * 2, MemoryPlanner.budgetOf(fp8, GpuRole.TRAIN).get(MemoryCategory.DEQUANT_BUFFERS)
                - MemoryPlanner.budgetOf(int4, GpuRole.TRAIN).get(MemoryCategory.DEQUANT_BUFFERS), "the bf16 copies");
        assertEquals(2 * largest * 2 + largest * 4,
                MemoryPlanner.budgetOf(fp8.withExact(true), GpuRole.TRAIN).get(MemoryCategory.DEQUANT_BUFFERS),
                "exact mode: the bf16 copies and the f32 one, no chunk buffer");
    }

    /**
     * Kept layers on the tiny fixture (2 layers, 16 training tokens): keeping the last layer under
     * recompute costs nothing (one layer's tape is live in backward either way); keeping both adds the
     * first layer's tape of the hand count above (3·64 + 3·96 + 1.25·(2·64 + 3·32) = 760 elements a
     * token, f32) and equals planning without recompute.
     */
    @Test
    void keptLayersAddTheirTapes() {
        PlanRequest req = tinyFixtureRequest();
        long none = activations(req);
        assertEquals(none, activations(req.withKeptLayers(1)));
        assertEquals(none + 760L * 16 * 4, activations(req.withKeptLayers(2)));
        assertEquals(activations(req.withRecompute(false)), activations(req.withKeptLayers(2)));
        assertThrows(IllegalArgumentException.class, () -> req.withKeptLayers(3));
    }

    /**
     * The training bench's shape (Qwen3-30B-A3B, 8 x 2048 tokens, LoRA r=32 on attention and experts,
     * one H200), whose 48 layers are alike: each kept layer beyond the first adds one layer's tape,
     * (no recompute − recompute) / 47; the most kept layers that fit is the edge of fitting.
     */
    @Test
    void mostKeptLayersIsTheEdgeOfFitting() {
        PlanRequest req = trainingBenchRequest();
        long all = trainActivations(req.withRecompute(false));
        long none = trainActivations(req);
        for (int k : new int[]{2, 10, 47}) {
            double expected = none + (all - none) * (k - 1) / 47.0;
            assertEquals(expected, trainActivations(req.withKeptLayers(k)), 8, k + " kept layers");
        }
        int most = MemoryPlanner.maxKeptLayers(req);
        assertTrue(most > 0 && most < 48, "some but not all of the 48 layers fit: " + most);
        assertTrue(MemoryPlanner.plan(req.withKeptLayers(most)).fits());
        assertFalse(MemoryPlanner.plan(req.withKeptLayers(most + 1)).fits());
        assertEquals(0, MemoryPlanner.maxKeptLayers(req.withRecompute(false)), "nothing to keep without recompute");
    }

    /**
     * A split layout of a model the runtime loads on one device only (deepseek_v4, gpt_oss) is planned with a note saying
     * so; the one-device layout of it, and a split of a model the runtime splits (qwen3_moe), carry no such note.
     */
    @Test
    void aSplitTheRuntimeCannotRunIsNoted() {
        for (String fixture : List.of("fixtures/deepseek_v4", "fixtures/gpt_oss", "fixtures/qwen3_moe")) {
            ModelSpec spec = TestModels.spec(fixture);
            PlanRequest req = PlanRequest.defaults(spec, null, NodeSpec.parse("2xH200")).withAdapter(AdapterSpec.parse("lora:4"))
                    .withBatch(new BatchShape(2, 2, 8, 8, 1));
            boolean splittable = spec.modelType().equals("qwen3_moe");
            for (int ep : new int[]{1, 2}) {
                var notes = MemoryPlanner.plan(req.withLayout(ParallelLayout.colocated(ep, 1))).notes();
                boolean noted = notes.stream().anyMatch(n -> n.contains("no expert- or tensor-parallel form of "
                        + spec.modelType()) && n.contains("refused when it is to run"));
                assertEquals(ep > 1 && !splittable, noted, fixture + " at ep " + ep + ": " + notes);
            }
        }
    }

    /**
     * Rollout under an expert split: each GPU its share of the prompts (the planner's layout), or every sequence on every
     * GPU ({@code rolloutReplicated}, as a job split by experts runs): twice the KV cache at ep 2, each way noted. Shares
     * are of whole prompts: 3 prompts over 2 GPUs plan 2 prompts' samples on each.
     */
    @Test
    void rolloutUnderAnExpertSplitIsSharedOrReplicatedAsNoted() {
        // sequences of 400 tokens, 26 blocks each: the pool's floor of 64 blocks does not bind
        PlanRequest req = tinyFixtureRequest().withBatch(new BatchShape(3, 2, 200, 200, 1));
        GpuBudget shared = MemoryPlanner.plan(req).budget(GpuRole.COLOCATED);
        GpuBudget replicated = MemoryPlanner.plan(req.withRolloutReplicated(true)).budget(GpuRole.COLOCATED);
        long perSequence = replicated.get(MemoryCategory.KV_CACHE) / 6;
        assertEquals(6 * perSequence, replicated.get(MemoryCategory.KV_CACHE), "every sequence's KV cache");
        assertEquals(4 * perSequence, shared.get(MemoryCategory.KV_CACHE), "2 of the 3 prompts' samples");
        assertTrue(MemoryPlanner.plan(req).notes().stream().anyMatch(n -> n.contains("its share of the step's prompts")));
        assertTrue(MemoryPlanner.plan(req.withRolloutReplicated(true)).notes().stream()
                .anyMatch(n -> n.contains("Every GPU rolls out every sequence")));
    }

    /**
     * The captured decode steps' arenas: two of the largest step's, each the layer working set of its rows x 640 f32
     * (the fixture's forward scratch a token), the residual stream and its normed copy rows x 2 x 64 f32, and the
     * logits rows x 256 f32; planned on a GPU whose rollout captures (one GPU a model), not under expert parallelism.
     */
    @Test
    void capturedDecodeArenasArePlannedWhereRolloutCapturesItsSteps() {
        ModelSpec spec = TestModels.spec("fixtures/qwen3_moe");
        for (int rows : new int[] {1, 2, 4}) {
            assertEquals(2L * (rows * 640 * 4 + rows * 2 * 64 * 4 + rows * 256 * 4), DecodeGraphBudget.engineBytes(spec, rows, 1),
                    rows + " rows");
        }
        assertEquals(2L * (4 * 640 * 4 + 4 * 2 * 64 * 4 + 4 * 256 * 4), DecodeGraphBudget.engineBytes(spec, 3, 1),
                "3 rows are captured in a step of 4");

        PlanRequest single = tinyFixtureRequest().withNode(NodeSpec.parse("1x2GiB"), ParallelLayout.colocated(1, 1));
        String arenas = Bytes.format(DecodeGraphBudget.engineBytes(spec, 4, 1));
        assertTrue(MemoryPlanner.plan(single).notes().stream().anyMatch(n -> n.contains("captured decode steps") && n.contains(arenas)),
                "one GPU: the arenas of its 4 sequences' steps (" + arenas + ") in the notes " + MemoryPlanner.plan(single).notes());
        assertTrue(MemoryPlanner.plan(tinyFixtureRequest()).notes().stream().noneMatch(n -> n.contains("captured decode steps")),
                "split by experts: no captured steps");
        assertTrue(MemoryPlanner.plan(single.withDecodeGraphs(false)).notes().stream().noneMatch(n -> n.contains("captured decode steps")),
                "decode_graphs: off");
        assertEquals(DecodeGraphBudget.engineBytes(spec, 4, 1), activations(single) - activations(single.withDecodeGraphs(false)),
                "the arenas are the whole difference in the activations");
    }

    /** The Qwen3-MoE fixture on 2 GPUs of 2 GiB: INT4 experts over EP 2, LoRA rank 4, 2 prompts x 2 samples of 8+8 tokens. */
    private static PlanRequest tinyFixtureRequest() {
        return PlanRequest.defaults(TestModels.spec("fixtures/qwen3_moe"), null, NodeSpec.parse("2x2GiB"))
                .withBase(BaseFormat.parse("int4")).withAdapter(AdapterSpec.parse("lora:4"))
                .withBatch(new BatchShape(2, 2, 8, 8, 1)).withLayout(ParallelLayout.colocated(2, 1))
                .withExpertChunk(2).withReserve(0);
    }

    /** The training bench's shape: Qwen3-30B-A3B, INT4 experts, LoRA r=32 (f32) on attention and experts, 8 x 2048 tokens, one H200. */
    private static PlanRequest trainingBenchRequest() {
        return PlanRequest.defaults(TestModels.spec("models/qwen3-30b-a3b"), null, NodeSpec.parse("1xH200"))
                .withBase(BaseFormat.parse("int4")).withAdapter(AdapterSpec.parse("lora:32:attention+experts:f32"))
                .withBatch(new BatchShape(8, 1, 1024, 1024, 8)).withLayout(ParallelLayout.colocated(1, 1))
                .withChunks(16384, 8192);
    }

    private static long activations(PlanRequest req) {
        return MemoryPlanner.plan(req).budget(GpuRole.COLOCATED).get(MemoryCategory.ACTIVATIONS);
    }

    private static long trainActivations(PlanRequest req) {
        return MemoryPlanner.budgetOf(req, GpuRole.TRAIN).get(MemoryCategory.ACTIVATIONS);
    }
}
