package org.orbitrl.scheduler.bench;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.CapturedStep;
import org.orbitrl.kernels.NotCapturableException;
import org.orbitrl.kernels.OpProfiler;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.cuda.CudaEvent;
import org.orbitrl.kernels.cuda.KernelTimeline;
import org.orbitrl.kernels.cuda.internal.KernelLibrary;
import org.orbitrl.kernels.cuda.internal.Launcher;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.DecodeStep;
import org.orbitrl.model.kv.PagedDecode;
import org.orbitrl.model.kv.PagedSequence;
import org.orbitrl.model.spec.ConfigLoader;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Decode steps of the model itself, the path rollout takes ({@link Qwen3Model#decodeStep}, captured and replayed as
 * {@code DecodeGraphs} does), on a random-weight Qwen3-MoE of a real shape (Qwen3-30B-A3B by default: routed experts
 * INT4 group-32, the rest bf16) with rollout's adapter attached (LoRA r=32 on q/k/v/o and on the fused experts, f32),
 * on the CUDA backend ({@code -Dorbit.bench.adapter=none}: the base model alone, as a plain transformers {@code generate}
 * runs it). Per batch, each sequence holding {@code context} keys: the step with the experts per (token,
 * expert) pair, captured as a graph and replayed, against the same step with the experts grouped by expert, which reads
 * the per-expert counts on the host and so runs eagerly. A batch whose step cannot be captured is reported as eager.
 *
 * <p>With {@code -Dorbit.profile=true} the steps run eagerly with the experts per pair under {@link OpProfiler} (every
 * operation waited for and timed) and each batch prints where a step's time goes, instead of the table.
 *
 * <pre>java ... org.orbitrl.scheduler.bench.ModelDecodeBench OUT CONFIG_JSON [context] [batches]</pre>
 */
public final class ModelDecodeBench {
    private static final int STEPS = 12;
    /** {@code -Dorbit.bench.grouped=false}: the grouped experts' columns left out. */
    private static final boolean GROUPED = !"false".equals(System.getProperty("orbit.bench.grouped"));
    /**
     * {@code -Dorbit.bench.profilerRange=true}: {@code cudaProfilerStart} before the first timed step, so that a profiler
     * started with its collection off ({@code ncu --profile-from-start off}) sees the timed steps and not the prefill.
     */
    private static final boolean PROFILER_RANGE = Boolean.getBoolean("orbit.bench.profilerRange");
    /** {@code -Dorbit.bench.kvCache=bf16}: the paged cache holds bf16 keys and values (f32 otherwise). */
    private static final org.orbitrl.kernels.DType KV = "bf16".equals(System.getProperty("orbit.bench.kvCache"))
            ? org.orbitrl.kernels.DType.BF16 : org.orbitrl.kernels.DType.F32;
    /**
     * {@code -Dorbit.bench.variants=NAME:KEY=VALUE,KEY=VALUE;NAME:...}: each batch's step timed under each variant's system
     * properties (the kernels' switches read at each call), the variants taken in turn {@code orbit.bench.rounds} times
     * (2 by default) on the same model and cache, each variant's best median reported. Empty: one run as is. Before the
     * rounds, {@code orbit.bench.warmup} untimed runs (1 by default) of the first variant: its first timed round otherwise
     * pays for the JVM's first run (on the H200, batch 64: 20.96-21.11 ms against 20.4-20.6 in later rounds). A variant's
     * {@code orbit.bench.omit=REGEX} leaves the launches it matches out of the captured step ({@link #capture}): the step's
     * time without them, so the difference is their share of the graph (the numbers are then wrong). A variant's
     * {@code orbit.cuda.pdl=on|off} captures its step with dependent launches on or off (a step of one sequence with them
     * on unless {@code orbit.cuda.pdlOneRow=off}).
     */
    private static final String VARIANTS = System.getProperty("orbit.bench.variants", "");
    private static final int ROUNDS = Math.max(1, Integer.getInteger("orbit.bench.rounds", 2));
    private static final int WARMUP = Math.max(0, Integer.getInteger("orbit.bench.warmup", 1));
    /**
     * {@code -Dorbit.bench.adapter=none}: the base model alone, no adapter attached (what a plain transformers
     * {@code generate} of the same shape runs); the HBM limit's bytes then leave the LoRA factors out. {@code lora} (the
     * default): rollout's adapter, LoRA r=32 f32 on q/k/v/o and the experts.
     */
    private static final boolean ADAPTER = adapterProperty(System.getProperty("orbit.bench.adapter", "lora"));

    private ModelDecodeBench() {
    }

    public static void main(String[] args) throws Exception {
        Path out = Path.of(args[0]);
        traceOut = out;
        Path config = Path.of(args[1]);
        int context = args.length > 2 ? Integer.parseInt(args[2]) : 512;
        int[] batches = args.length > 3 ? Arrays.stream(args[3].split(",")).mapToInt(Integer::parseInt).toArray() : new int[]{1, 8, 64};
        DecoderConfig dc = DecoderConfig.from(ConfigLoader.load(config));
        StringBuilder md = new StringBuilder();
        try (Backend backend = Backends.named("cuda")) {
            CudaBackend gpu = (CudaBackend) backend;
            OpProfiler profiler = Boolean.getBoolean("orbit.profile") ? OpProfiler.wrap(backend, gpu::synchronize) : null;
            long t0 = System.nanoTime();
            Qwen3Model model = Qwen3Model.load(dc, new RandomQwen3Moe(dc, 1), profiler == null ? backend : profiler.backend(),
                    Qwen3Model.LoadOptions.full());
            String adapterText = "no adapter";
            if (ADAPTER) {
                AdapterConfig acfg = AdapterConfig.lora(RANK, 64, List.of("q_proj", "k_proj", "v_proj", "o_proj"),
                        List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));
                LoraAdapter adapter = LoraAdapter.create(acfg, model, backend.allocator(), 5);
                adapterText = String.format("LoRA r=%d (%.0fM parameters, f32) on q/k/v/o and the experts", RANK,
                        adapter.parameterCount() / 1e6);
            }
            md.append("## Model decode steps (ModelDecodeBench) on ").append(gpu.device()).append("\n\nDate: ").append(Instant.now())
                    .append(String.format("%n%nShape %s: %d layers, hidden %d, %d experts top-%d x %d, vocab %d; experts INT4 g32, the rest"
                                    + " bf16; %s; built in %.1f s. Context %d keys a sequence in a %s paged cache; %d steps a row,"
                                    + " median.%n%n",
                            config.getParent().getFileName(), dc.layers(), dc.hidden(), dc.experts(), dc.topK(), dc.moeIntermediate(),
                            dc.vocab(), adapterText, (System.nanoTime() - t0) / 1e9, context,
                            KV.name().toLowerCase(java.util.Locale.ROOT), STEPS));
            double copy = profiler == null ? copyBandwidth(gpu) : 0;
            if (profiler == null) {
                System.out.printf("Copy bandwidth %.0f GB/s (measured before the steps; a run stopped by a time limit keeps it)%n", copy);
            }
            md.append(String.format("Copy bandwidth %.0f GB/s (device to device, read + write, same run). The HBM limit: the bytes a"
                            + " step reads at least (every dense weight and the LM head in bf16,%s the routed experts' INT4 weights"
                            + " %sfor the distinct experts a layer expects under uniform routing, E·(1 − (1 − k/E)^B), and each"
                            + " sequence's keys and values) over that bandwidth.%n%n", copy,
                            ADAPTER ? " the attention's LoRA factors," : "", ADAPTER ? "and LoRA factors " : ""))
                    .append(!VARIANTS.isBlank() ? "" : GROUPED
                            ? "| batch | experts per pair, step | tokens/s | bytes/step | of the HBM limit | experts grouped, step | tokens/s |"
                                    + " speed-up |\n|---|---|---|---|---|---|---|---|\n"
                            : "| batch | experts per pair, step | tokens/s | bytes/step | of the HBM limit |\n|---|---|---|---|---|\n");
            CausalLM.CacheGeometry g = model.cacheGeometry();
            int most = Arrays.stream(batches).max().orElse(1);
            BlockPool pool = new BlockPool(gpu.allocator(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), BLOCK,
                    most * blocksPerSequence(context), true, KV);
            if (profiler != null) {
                for (int batch : batches) {
                    try (Prefilled p = prefill(model, pool, dc, batch, context)) {
                        double[] eager = run(gpu, model, pool, dc, p, true, profiler);
                        System.out.printf("batch %d, experts per pair, eager and profiled: %.3f ms a step%n%s%n", batch, eager[0],
                                profiler.report(30));
                    }
                }
                return;
            }
            if (!VARIANTS.isBlank()) {
                md.append("| batch | variant | step | tokens/s | of the HBM limit | medians |\n|---|---|---|---|---|---|\n");
                for (int batch : batches) {
                    String[] variants = VARIANTS.split(";");
                    double[][] ms = new double[variants.length][ROUNDS];
                    try (Prefilled p = prefill(model, pool, dc, batch, context)) {
                        for (int round = -WARMUP; round < ROUNDS; round++) {
                            for (int v = 0; v < (round < 0 ? 1 : variants.length); v++) {
                                Map<String, String> before = applyVariant(variants[v]);
                                try {
                                    double step = run(gpu, model, pool, dc, p, true, null)[0];
                                    if (round >= 0) {
                                        ms[v][round] = step;
                                        // each as it is taken: a later variant that stops the run leaves these in the log
                                        System.out.printf("batch %d, round %d, %s: %.3f ms%n", batch, round + 1, variants[v], step);
                                    }
                                } finally {
                                    before.forEach((k, old) -> {
                                        if (old == null) {
                                            System.clearProperty(k);
                                        } else {
                                            System.setProperty(k, old);
                                        }
                                    });
                                }
                            }
                        }
                    }
                    double bytes = bytesPerStep(dc, batch, context + STEPS / 2);
                    for (int v = 0; v < variants.length; v++) {
                        double best = Arrays.stream(ms[v]).min().orElseThrow();
                        String row = String.format("| %d | %s | %.3f ms | %.0f | %.3f | %s |", batch, variants[v], best,
                                batch / (best / 1e3), bytes / (copy * 1e9) / (best / 1e3),
                                Arrays.stream(ms[v]).mapToObj(x -> String.format("%.3f", x)).collect(java.util.stream.Collectors.joining(" ")));
                        System.out.println(row);
                        md.append(row).append('\n');
                    }
                }
                batches = new int[0];
            }
            for (int batch : batches) {
                double[] pairs;
                double[] grouped;
                try (Prefilled p = prefill(model, pool, dc, batch, context)) {
                    pairs = run(gpu, model, pool, dc, p, true, null);
                    grouped = GROUPED ? run(gpu, model, pool, dc, p, false, null) : new double[]{Double.NaN, 0};
                }
                double bytes = bytesPerStep(dc, batch, context + STEPS / 2);
                String row = String.format("| %d | %s | %.0f | %.2f GB | %.3f |", batch, label(pairs), batch / (pairs[0] / 1e3),
                        bytes / 1e9, bytes / (copy * 1e9) / (pairs[0] / 1e3));
                if (GROUPED) {
                    row += String.format(" %s | %.0f | %.2fx |", label(grouped), batch / (grouped[0] / 1e3), grouped[0] / pairs[0]);
                }
                System.out.println(row);
                md.append(row).append('\n');
            }
            gpu.moePairs(true);
        }
        md.append("\n\"graph\": the captured step replayed; \"eager\": launched from Java, with the host read of the grouped experts.\n");
        System.out.println(md);
        Files.createDirectories(out);
        Files.writeString(out.resolve("model-decode.md"), md);
    }

    /** Sets the system properties of a variant ({@code NAME:KEY=VALUE,...}); returns their values before (null: unset). */
    private static Map<String, String> applyVariant(String variant) {
        Map<String, String> before = new java.util.LinkedHashMap<>();
        int colon = variant.indexOf(':');
        String props = colon < 0 ? "" : variant.substring(colon + 1);
        for (String kv : props.split(",")) {
            if (kv.isBlank()) {
                continue;
            }
            int eq = kv.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("orbit.bench.variants: '" + kv + "' in '" + variant + "' is not KEY=VALUE");
            }
            String key = kv.substring(0, eq).trim();
            before.put(key, System.getProperty(key));
            System.setProperty(key, kv.substring(eq + 1).trim());
        }
        return before;
    }

    /** The driver's {@code cuProfilerStart} for the current context (not in the JavaCPP presets; through the FFM linker). */
    private static void profilerStart() {
        try {
            var lookup = java.lang.foreign.SymbolLookup.libraryLookup("libcuda.so.1", java.lang.foreign.Arena.global());
            var start = java.lang.foreign.Linker.nativeLinker().downcallHandle(lookup.find("cuProfilerStart").orElseThrow(),
                    java.lang.foreign.FunctionDescriptor.of(java.lang.foreign.ValueLayout.JAVA_INT));
            int rc = (int) start.invokeExact();
            System.out.println("cuProfilerStart: " + rc);
        } catch (Throwable e) {
            throw new IllegalStateException("cuProfilerStart", e);
        }
    }

    private static boolean adapterProperty(String value) {
        return switch (value) {
            case "lora" -> true;
            case "none" -> false;
            default -> throw new IllegalArgumentException("orbit.bench.adapter: '" + value + "', expected lora or none");
        };
    }

    /**
     * LoRA rank of the bench's adapter: {@code -Dorbit.bench.rank=N} (32 by default, a multiple of 4 from 4 to 64; 16
     * reads the factors' bytes that bf16 factors of rank 32 would, over the same launches).
     */
    private static final int RANK = rankProperty(System.getProperty("orbit.bench.rank", "32"));

    private static int rankProperty(String value) {
        try {
            int r = Integer.parseInt(value.trim());
            if (r >= 4 && r <= 64 && r % 4 == 0) {
                return r;
            }
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new IllegalArgumentException("orbit.bench.rank: '" + value + "', expected a multiple of 4 from 4 to 64");
    }

    /** The bytes a decode step of {@code batch} sequences holding {@code keys} keys each reads at least (see the table's note). */
    static double bytesPerStep(DecoderConfig c, int batch, int keys) {
        double h = c.hidden();
        double q = (double) c.heads() * c.headDim();
        double kv = (double) c.kvHeads() * c.headDim();
        double attention = 2 * (h * q + 2 * h * kv + q * h) + 2.0 * c.experts() * h;          // q, k, v, o, router: bf16
        double attentionLora = 4.0 * RANK * ((h + q) + 2 * (h + kv) + (q + h));               // A and B of q, k, v, o: f32
        double expertParams = 3.0 * h * c.moeIntermediate();
        double expert = expertParams / 2 + expertParams / 32 * 2;                             // INT4 codes and bf16 group scales
        double expertLora = 4.0 * RANK * 3 * (h + c.moeIntermediate());                       // gate, up, down: A and B, f32
        double distinct = c.experts() * (1 - Math.pow(1 - (double) c.topK() / c.experts(), batch));
        double cache = (double) batch * keys * 2 * kv * KV.bytes();                          // keys and values, f32 or bf16
        if (!ADAPTER) {
            attentionLora = 0;
            expertLora = 0;
        }
        double perLayer = attention + attentionLora + distinct * (expert + expertLora) + cache;
        return c.layers() * perLayer + 2.0 * c.vocab() * h;                                   // the LM head, bf16
    }

    /** Device-to-device copy bandwidth (read + write), GB/s: ten copies of 2 GiB timed by events. */
    static double copyBandwidth(CudaBackend gpu) {
        long bytes = 2L << 30;
        org.orbitrl.kernels.Tensor src = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, org.orbitrl.kernels.DType.U8, bytes);
        org.orbitrl.kernels.Tensor dst = gpu.allocator().allocate(org.orbitrl.kernels.MemoryCategory.OTHER, org.orbitrl.kernels.DType.U8, bytes);
        try (CudaEvent a = new CudaEvent(); CudaEvent b = new CudaEvent()) {
            gpu.allocator().copy(src, dst);
            gpu.synchronize();
            a.record(gpu.stream());
            for (int i = 0; i < 10; i++) {
                gpu.allocator().copy(src, dst);
            }
            b.record(gpu.stream());
            b.synchronize();
            return 2.0 * bytes * 10 / (b.elapsedMillisSince(a) * 1e6);
        } finally {
            gpu.free(src);
            gpu.free(dst);
        }
    }

    private static String label(double[] r) {
        return String.format("%.3f ms (%s)", r[0], r[1] > 0 ? "graph" : "eager");
    }

    private static final int BLOCK = 16;

    /** A prefilled sequence's blocks (its context) and a run's own blocks for its steps (forks that copy a partial block). */
    private static int blocksPerSequence(int context) {
        return (context + STEPS + 4 + BLOCK - 1) / BLOCK + 1;
    }

    /**
     * A batch's sequences, prefilled once (a sequence at a time, {@code context} random tokens each): every run of the batch
     * (each variant, round, and the grouped experts' row) decodes from forks of them, so a run pays for its steps and not
     * for the prefill (at batch 256 of this shape the prefill takes over a minute, a run a second).
     */
    private record Prefilled(List<PagedSequence> seqs) implements AutoCloseable {
        @Override
        public void close() {
            seqs.forEach(PagedSequence::close);
        }
    }

    private static Prefilled prefill(Qwen3Model model, BlockPool pool, DecoderConfig dc, int batch, int context) {
        List<PagedSequence> seqs = new ArrayList<>();
        SplittableRandom r = new SplittableRandom(batch);
        try {
            for (int b = 0; b < batch; b++) {
                PagedSequence s = new PagedSequence(pool);
                seqs.add(s);
                int[] prompt = new int[context];
                for (int i = 0; i < context; i++) {
                    prompt[i] = r.nextInt(dc.vocab());
                }
                model.forward(List.of(new CausalLM.Segment(prompt, s)));
            }
        } catch (RuntimeException e) {
            seqs.forEach(PagedSequence::close);
            throw e;
        }
        return new Prefilled(seqs);
    }

    /**
     * The decode step captured, with the launches {@code -Dorbit.bench.omit=REGEX} names left out of the graph (a variant's
     * timing aid: {@code Launcher.OMIT_PROPERTY} set for the capture alone, so the prefill and the eager steps run whole).
     * The whole step is captured and replayed once before, so that what the left-out launches would write (the router's
     * experts, the routing) holds this batch's values rather than the prefill's: the step's arena is planned by its
     * allocations alone, the same with and without the launches, and a new arena of the same size usually lands where
     * the last one was freed (a line says so when it did not: the left-out launches' arena buffers then hold no values).
     */
    private static CapturedStep capture(CudaBackend gpu, DecodeStep step) {
        // orbit.cuda.pdl as the variant (or the JVM) sets it; on says so where the kernels are built for an older GPU
        gpu.dependentLaunches(KernelLibrary.dependentLaunchesAsked(System.getProperty(KernelLibrary.DEPENDENT_LAUNCH_PROPERTY)));
        String omit = System.getProperty("orbit.bench.omit", "");
        if (omit.isEmpty()) {
            long fills = gpu.allocator().capturedZeroFills();
            CapturedStep s = gpu.captureStep(step::run, step.batch());
            System.out.printf("batch %d: %d zero fills captured into the step%n", step.batch(),
                    gpu.allocator().capturedZeroFills() - fills);
            return s;
        }
        long wholeOutput;
        try (CapturedStep whole = gpu.captureStep(step::run, step.batch())) {
            wholeOutput = CudaAllocator.address(whole.replay());
            gpu.synchronize();
        }
        System.setProperty(Launcher.OMIT_PROPERTY, omit);
        CapturedStep cut;
        try {
            cut = gpu.captureStep(step::run, step.batch());
        } finally {
            System.clearProperty(Launcher.OMIT_PROPERTY);
        }
        if (CudaAllocator.address(cut.replay()) != wholeOutput) {
            System.out.println("orbit.bench.omit=" + omit + ": the step's arena moved between the captures; the left-out"
                    + " launches' arena buffers hold no values of this batch");
        }
        return cut;
    }

    /** Where a traced run ({@code -Dorbit.cuda.trace=on}) writes each step's timeline as CSV; null: not written. */
    private static Path traceOut;
    /**
     * {@code -Dorbit.bench.traceBlocks=REGEX}: a traced run also prints, block by block ({@link KernelTimeline#blocks}),
     * the launches of the middle layer whose kernel names REGEX finds; empty: none.
     */
    private static final java.util.regex.Pattern TRACE_BLOCKS = java.util.regex.Pattern.compile(System.getProperty("orbit.bench.traceBlocks", "^$"));
    private static int traced;

    /**
     * One more replay of the captured step in a traced build, its launches printed: averaged by kernel over the middle
     * half of the step's launches (the layers away from the embedding and the LM head), and the launches of one layer in
     * the middle as they ran; the whole timeline written as CSV beside the bench's report.
     */
    private static void traceStep(CudaBackend gpu, CapturedStep captured, DecodeStep step, BlockPool pool, List<PagedSequence> seqs,
                                  DecoderConfig dc, SplittableRandom r) {
        List<CausalLM.Segment> segs = new ArrayList<>();
        for (PagedSequence s : seqs) {
            segs.add(new CausalLM.Segment(new int[]{r.nextInt(dc.vocab())}, s));
        }
        DecodeStep.blocksAfterReserve(segs, pool);
        step.prepare(segs);
        gpu.traceReset();
        captured.replay();
        KernelTimeline t = gpu.kernelTimeline();
        step.finish(segs);
        int n = t.launches().size();
        int per = Math.max(1, (n - 2) / dc.layers());
        System.out.printf("batch %d, traced step: %d launches, %.1f µs from the first start to the last end, %d records dropped%n"
                + "averaged over launches %d to %d:%n%s%nlaunches of a layer in the middle:%n%s%n", seqs.size(), n, t.spanNanos() / 1e3,
                t.dropped(), n / 4, 3 * n / 4, t.byKernel(n / 4, 3 * n / 4, gpu::kernelCodeBytes), t.table(n / 2, n / 2 + per + 1));
        for (int i = n / 2; i < Math.min(n, n / 2 + per + 1); i++) {
            if (TRACE_BLOCKS.matcher(t.launches().get(i).name()).find()) {
                System.out.println(t.blocks(i));
            }
        }
        if (traceOut != null) {
            Path f = traceOut.resolve("trace-" + (++traced) + "-batch" + seqs.size() + ".csv");
            try {
                Files.writeString(f, t.csv());
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException("cannot write the step's timeline to " + f, e);
            }
        }
    }

    /**
     * {median ms a step, 1 if replayed as a graph else 0} of decoding {@code STEPS} tokens (after one that warms up and
     * captures) on forks of the prefilled sequences, with the experts per pair or grouped; the tokens are the same in
     * every run of a batch. With a profiler, every step eager and the timed steps alone counted by it.
     */
    private static double[] run(CudaBackend gpu, Qwen3Model model, BlockPool pool, DecoderConfig dc, Prefilled prefilled, boolean pairs,
                                OpProfiler profiler) {
        gpu.moePairs(pairs);
        int batch = prefilled.seqs().size();
        List<PagedSequence> seqs = new ArrayList<>();
        SplittableRandom r = new SplittableRandom(1_000_003L * batch + 17);
        try {
            for (PagedSequence base : prefilled.seqs()) {
                seqs.add(base.fork());
            }
            gpu.synchronize();
            double[] ms = new double[STEPS];
            CapturedStep captured = null;
            DecodeStep step = null;
            boolean graph = profiler == null;
            for (int i = 0; i < STEPS + 1; i++) {         // the first step warms up (and captures)
                List<CausalLM.Segment> segs = new ArrayList<>();
                for (PagedSequence s : seqs) {
                    segs.add(new CausalLM.Segment(new int[]{r.nextInt(dc.vocab())}, s));
                }
                if (i == 1 && PROFILER_RANGE) {
                    profilerStart(); // an external profiler's window: the timed steps
                }
                long t = System.nanoTime();
                if (graph) {
                    int widest = DecodeStep.blocksAfterReserve(segs, pool);
                    if (step == null) {
                        step = model.decodeStep(pool, batch, PagedDecode.tableWidth(widest + STEPS));
                    }
                    step.prepare(segs);
                    try {
                        if (captured == null) {
                            captured = capture(gpu, step);
                        }
                        captured.replay();
                        step.finish(segs);
                    } catch (NotCapturableException e) {
                        graph = false;                      // the eager forward reserves the same room again
                    }
                }
                if (!graph) {
                    if (profiler != null && i == 1) {
                        profiler.reset();
                    }
                    model.forward(segs);
                }
                gpu.synchronize();
                if (i > 0) {
                    ms[i - 1] = (System.nanoTime() - t) / 1e6;
                }
            }
            if (captured != null) {
                if (gpu.traced()) {
                    traceStep(gpu, captured, step, pool, seqs, dc, r);
                }
                captured.close();
            }
            Arrays.sort(ms);
            return new double[]{ms[STEPS / 2], graph ? 1 : 0};
        } finally {
            seqs.forEach(PagedSequence::close);
        }
    }
}
