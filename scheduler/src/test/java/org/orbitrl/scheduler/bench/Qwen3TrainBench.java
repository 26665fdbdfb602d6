package org.orbitrl.scheduler.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Backends;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.OpProfiler;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cpu.CpuBackend;
import org.orbitrl.kernels.cuda.CudaAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.cuda.PeakSites;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.AdapterSlots;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.arch.DecoderConfig;
import org.orbitrl.model.arch.Qwen3Model;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;
import org.orbitrl.scheduler.loop.AccountingAllocator;
import org.orbitrl.scheduler.rl.AdamW;
import org.orbitrl.scheduler.rl.AdamWConfig;
import org.orbitrl.scheduler.rl.LearningRateSchedule;
import org.orbitrl.scheduler.rl.Parameter;
import org.orbitrl.scheduler.rl.StepResult;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Adapter training throughput on a Qwen3-MoE model with the shape of a released {@code config.json}
 * (Qwen3-30B-A3B by default) and random weights: routed experts INT4 group-32, the rest bf16, on the
 * backend {@code -Dorbit.kernels} names (default {@code cuda}). LoRA r=32 on q/k/v/o and on the fused
 * experts; one step is forward, next-token cross-entropy, adapter-only backward and AdamW. For each
 * tokens-per-step shape it prints tokens/s, the device allocator's peak by category beside the memory
 * planner's prediction for the same shape, and stops at the first shape that runs out of memory. It
 * also times a publish of the adapter into the idle slot of a rollout view's {@link AdapterSlots}.
 * With the PyTorch + peft peer's JSON ({@code tools/gpu/peer_train.py}) the table gains ratios.
 *
 * <pre>
 * java ... org.orbitrl.scheduler.bench.Qwen3TrainBench --config models/qwen3-30b-a3b/config.json
 *     [--layers N] [--small] [--shapes 1x512,2x1024,4x2048,8x2048] [--steps 2] [--recompute true]
 *     [--expert-chunk 8] [--kept-layers 0|N|auto] [--budget-s 200] [--peer peer.json] [--out train-bench.md]
 * java ... org.orbitrl.scheduler.bench.Qwen3TrainBench --render train-bench.md.json --peer peer.json --out train-bench.md
 * </pre>
 * {@code --out F} also writes {@code F.json}, from which {@code --render} prints the table again with
 * the peer's figures (the peer runs after this bench, on a free GPU).
 * {@code --layers N} builds only the first N layers (every figure is then for N layers, as labelled);
 * {@code --small} shrinks the widths to a CPU-sized smoke check. With {@code -Dorbit.cuda.peakSites=true} on a
 * device, each shape also prints the call sites that allocated the activations live at their peak.
 */
public final class Qwen3TrainBench {
    private static final ObjectMapper JSON = new ObjectMapper();
    /** With {@code -Dorbit.profile=true}: each operation timed (waited for) in the timed steps; see {@link OpProfiler}. */
    private static OpProfiler profiler;

    private Qwen3TrainBench() {
    }

    public static void main(String[] args) throws Exception {
        TrainBenchOptions o = TrainBenchOptions.parse(args);
        if (o.render() != null) {   // the table again from an earlier run's JSON, now with the peer's figures
            TrainBenchReport.fromJson(o.render(), o.peer() == null ? null : JSON.readTree(o.peer().toFile())).write(o.out());
            return;
        }
        ObjectNode cfg = (ObjectNode) JSON.readTree(o.config().toFile());
        int fullLayers = cfg.get("num_hidden_layers").asInt();
        if (o.small()) {
            shrink(cfg);
        }
        if (o.layers() > 0) {
            cfg.put("num_hidden_layers", o.layers());
        }
        Path cfgFile = Files.createTempDirectory("orbit-train-bench").resolve("config.json");
        JSON.writerWithDefaultPrettyPrinter().writeValue(cfgFile.toFile(), cfg);
        ModelSpec spec = ConfigLoader.load(cfgFile);
        DecoderConfig dc = DecoderConfig.from(spec);
        String kernels = System.getProperty("orbit.kernels", "cuda");
        AccountingAllocator hostMem = new AccountingAllocator();
        TrainBenchReport report = new TrainBenchReport(o, kernels, dc, fullLayers, o.peer() == null ? null : JSON.readTree(o.peer().toFile()));
        long start = System.nanoTime();
        try (Backend backend = kernels.startsWith("cuda") ? Backends.named(kernels)
                : new CpuBackend(Runtime.getRuntime().availableProcessors(), hostMem)) {
            TensorAllocator alloc = backend.allocator();
            TrainBenchPlan.forDevice(backend);
            profiler = Boolean.getBoolean("orbit.profile") ? OpProfiler.wrap(backend,
                    backend instanceof CudaBackend gpu ? gpu::synchronize : () -> { }) : null;
            Backend run = profiler == null ? backend : profiler.backend();
            long t0 = System.nanoTime();
            RandomQwen3Moe weights = new RandomQwen3Moe(dc, 1);
            Qwen3Model model = Qwen3Model.load(dc, weights, run, Qwen3Model.LoadOptions.full());
            model.setExpertChunk(o.expertChunk());
            report.line(String.format("model: %s, %d layers%s (of %d), hidden %d, %d experts top-%d x %d, vocab %d; built in %.1f s (%.1f s generating), base %.2f GB",
                    dc.modelType(), dc.layers(), o.small() ? " (--small widths)" : "", fullLayers, dc.hidden(), dc.experts(),
                    dc.topK(), dc.moeIntermediate(), dc.vocab(), (System.nanoTime() - t0) / 1e9, weights.generatingSeconds(),
                    model.heldBaseBytes() / 1e9));
            AdapterConfig acfg = AdapterConfig.lora(32, 64, List.of("q_proj", "k_proj", "v_proj", "o_proj"),
                    List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));
            LoraAdapter adapter = LoraAdapter.create(acfg, model, alloc, 5);
            List<Parameter> params = new ArrayList<>();
            for (Adapter.Param p : adapter.params()) {
                params.add(new Parameter(p.name(), p.value()));
            }
            AdamW adamw = alloc.hostMemory()
                    ? new AdamW(AdamWConfig.defaults(), new LearningRateSchedule.Constant(1e-5), params, alloc)
                    : new AdamW(AdamWConfig.defaults(), new LearningRateSchedule.Constant(1e-5), params, run);
            report.line(String.format("adapter: LoRA r=32 alpha 64 on q/k/v/o and fused experts, %.1fM parameters (f32), %d tensors",
                    adapter.parameterCount() / 1e6, params.size()));
            for (int[] shape : o.shapes()) {
                if ((System.nanoTime() - start) / 1e9 > o.budgetSeconds()) {
                    report.line(String.format("stopped before %dx%d: the time budget of %d s is spent", shape[0], shape[1], o.budgetSeconds()));
                    break;
                }
                int kept = !o.recompute() ? 0 : o.keptLayers() >= 0 ? Math.min(o.keptLayers(), dc.layers())
                        : TrainBenchPlan.maxKeptLayers(spec, cfgFile, shape[0], shape[1], o.expertChunk());
                model.setKeptLayers(kept);
                if (o.recompute()) {
                    report.line(String.format("%dx%d: recompute, the last %d of %d layers kept%s", shape[0], shape[1], kept,
                            dc.layers(), o.keptLayers() < 0 ? " (the most the planner fits)" : ""));
                }
                TrainBenchReport.Row row = step(model, adapter, adamw, run, hostMem, shape[0], shape[1], o.steps(), o.recompute());
                row.planned = TrainBenchPlan.predict(spec, cfgFile, shape[0], shape[1], o.recompute(), o.expertChunk(), kept);
                report.add(row);
                if (o.out() != null) {   // after every shape: a run stopped by its time limit keeps what it measured
                    report.writeJson(Path.of(o.out() + ".json"));
                }
                if (row.failure != null) {
                    break;
                }
            }
            try {
                report.publish(publish(model, acfg, adapter, backend));
            } catch (RuntimeException e) {
                report.line("adapter publish failed: " + causes(e));
            }
        }
        if (o.out() != null) {
            report.writeJson(Path.of(o.out() + ".json"));
        }
        report.write(o.out());
    }

    /** Warm-up and {@code steps} timed steps of {@code batch} random sequences of {@code seq} tokens. */
    static TrainBenchReport.Row step(Qwen3Model model, LoraAdapter adapter, AdamW adamw, Backend backend,
                                     AccountingAllocator hostMem, int batch, int seq, int steps, boolean recompute) {
        TrainBenchReport.Row row = new TrainBenchReport.Row(batch, seq);
        SplittableRandom rnd = new SplittableRandom(31L * batch + seq);
        List<int[]> seqs = new ArrayList<>();
        for (int b = 0; b < batch; b++) {
            int[] s = new int[seq];
            for (int t = 0; t < seq; t++) {
                s[t] = rnd.nextInt(model.vocabSize());
            }
            seqs.add(s);
        }
        try {
            double loss = 0;
            long timed = 0;
            for (int i = 0; i <= steps; i++) {
                releaseGarbage(backend);   // the last step's activations, so the allocator's peak is one step's
                long t0 = System.nanoTime();
                adapter.zeroGrad();
                loss = NextTokenLoss.forwardBackward(model, backend, seqs, recompute);
                List<Tensor> grads = new ArrayList<>();
                for (Adapter.Param p : adapter.params()) {
                    grads.add(p.grad());
                }
                StepResult r = adamw.step(loss, grads);    // reads the gradient norm back: the step has finished
                if (r instanceof StepResult.Skipped s) {
                    throw new IllegalStateException("AdamW skipped the step: " + s.offender());
                }
                if (i > 0) {
                    timed += System.nanoTime() - t0;
                } else if (profiler != null) {
                    profiler.reset();   // the timed steps only
                }
            }
            if (profiler != null) {
                System.out.printf("%dx%d, %d timed steps: %s", batch, seq, steps, profiler.report(40));
            }
            row.seconds = timed / 1e9 / steps;
            row.loss = loss;
        } catch (OutOfMemoryError | RuntimeException e) {
            // the shapes after this one are not tried; what ran so far is still reported
            row.failure = outOfMemory(e) ? "out of memory: " + firstLine(e.getMessage()) : "failed: " + causes(e);
        }
        row.peak = peak(backend, hostMem);
        if (PeakSites.enabled() && backend.allocator() instanceof CudaAllocator ca) {
            System.out.print(peakSites(ca, MemoryCategory.ACTIVATIONS, batch + "x" + seq, 20));
        }
        row.peakTotal = backend.allocator() instanceof CudaAllocator ca ? ca.peakBytes() : hostMem.peak().values().stream().mapToLong(Long::longValue).sum();
        seqs.clear();
        releaseGarbage(backend);
        return row;
    }

    /** Lets the collector find dropped device tensors and frees them now (host tensors: only the collection). */
    static void releaseGarbage(Backend backend) {
        System.gc();
        if (backend.allocator() instanceof CudaAllocator ca) {
            try {
                Thread.sleep(50);   // the cleaner reports unreachable blocks asynchronously
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            ca.releaseUnreachableNow();
        }
    }

    /** Peak bytes by category since the start (the allocator keeps no per-step peak; shapes grow, so it is this shape's). */
    static Map<MemoryCategory, Long> peak(Backend backend, AccountingAllocator hostMem) {
        Map<MemoryCategory, Long> m = new EnumMap<>(MemoryCategory.class);
        if (backend.allocator() instanceof CudaAllocator ca) {
            for (MemoryCategory c : MemoryCategory.values()) {
                m.put(c, ca.peakBytes(c));
            }
        } else {
            m.putAll(hostMem.peak());
        }
        return m;
    }

    /**
     * With {@code -Dorbit.cuda.peakSites=true}: the call sites that allocated the bytes live at
     * {@code category}'s highest peak so far, the {@code top} largest, with their share of the peak.
     */
    static String peakSites(CudaAllocator ca, MemoryCategory category, String label, int top) {
        List<PeakSites.Site> sites = ca.peakSites(category);
        long total = sites.stream().mapToLong(PeakSites.Site::bytes).sum();
        StringBuilder sb = new StringBuilder(String.format("%s: %s peak %.3f GB (allocator %.3f GB) by allocating site, top %d of %d:%n",
                label, category, total / 1e9, ca.peakBytes(category) / 1e9, Math.min(top, sites.size()), sites.size()));
        for (PeakSites.Site s : sites.subList(0, Math.min(top, sites.size()))) {
            sb.append(String.format("  %10.3f GB %5.1f%% %6d allocations  %s%n", s.bytes() / 1e9, 100.0 * s.bytes() / Math.max(1, total),
                    s.allocations(), s.site()));
        }
        return sb.toString();
    }

    /**
     * Publishes {@code adapter} into the idle slot of a rollout view's {@link AdapterSlots}. On a host
     * backend through {@link AdapterSlots#publish}; on a device, whose tensors the host cannot address,
     * as the same tensor-by-tensor copy into the idle slot's adapter through the device allocator.
     */
    static TrainBenchReport.Publish publish(Qwen3Model model, AdapterConfig cfg, LoraAdapter adapter, Backend backend)
            throws InterruptedException {
        Qwen3Model view = model.view();
        TensorAllocator alloc = backend.allocator();
        List<LoraAdapter> made = new ArrayList<>();
        AdapterSlots slots = new AdapterSlots(view, () -> {
            LoraAdapter a = LoraAdapter.create(cfg, view, alloc, 7);
            made.add(a);
            return a;
        }, 0);
        long bytes = 0;
        long t0 = System.nanoTime();
        if (alloc.hostMemory()) {
            bytes = slots.publish(adapter, 1);
        } else {
            List<? extends Adapter.Param> dst = made.get(1).params();   // slot 1 is idle
            List<? extends Adapter.Param> src = adapter.params();
            for (int i = 0; i < dst.size(); i++) {
                alloc.copy(src.get(i).value(), dst.get(i).value());
                bytes += dst.get(i).value().byteSize();
            }
            alloc.toHost(alloc.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 1));   // same stream: waits for the copies
        }
        double ms = (System.nanoTime() - t0) / 1e6;
        return new TrainBenchReport.Publish(bytes, ms, alloc.hostMemory() ? "AdapterSlots.publish" : "device copy into the idle slot");
    }

    static boolean outOfMemory(Throwable e) {
        if (e instanceof OutOfMemoryError) {
            return true;
        }
        for (Throwable t = e; t != null; t = t.getCause()) {
            String m = String.valueOf(t.getMessage()).toLowerCase(java.util.Locale.ROOT);
            if (m.contains("out of memory") || m.contains("cudaerrormemoryallocation") || m.contains("memory allocation")) {
                return true;
            }
        }
        return false;
    }

    /** Each exception of the cause chain: its class and first message line. */
    static String causes(Throwable e) {
        StringBuilder sb = new StringBuilder();
        for (Throwable t = e; t != null; t = t.getCause()) {
            sb.append(sb.isEmpty() ? "" : "; caused by ").append(t.getClass().getSimpleName()).append(": ")
                    .append(firstLine(t.getMessage()));
            if (t.getCause() == null && t.getStackTrace().length > 0) {
                sb.append(" at ").append(t.getStackTrace()[0]);
            }
        }
        return sb.toString();
    }

    static String firstLine(String s) {
        if (s == null) {
            return "";
        }
        int i = s.indexOf('\n');
        return i < 0 ? s : s.substring(0, i);
    }

    /** CPU-sized widths of the same architecture. */
    static void shrink(ObjectNode c) {
        c.put("hidden_size", 128);
        c.put("moe_intermediate_size", 64);
        c.put("intermediate_size", 256);
        c.put("num_attention_heads", 4);
        c.put("num_key_value_heads", 2);
        c.put("head_dim", 32);
        c.put("num_experts", 8);
        c.put("num_experts_per_tok", 2);
        c.put("vocab_size", 512);
        c.put("max_position_embeddings", 4096);
    }

    static JsonNode readJson(Path p) throws java.io.IOException {
        return JSON.readTree(p.toFile());
    }
}
