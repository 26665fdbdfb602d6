package org.orbitrl.tools;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.Locale;
import java.util.concurrent.Callable;
import org.orbitrl.kernels.DType;
import org.orbitrl.memory.plan.AdapterSpec;
import org.orbitrl.memory.plan.BaseFormat;
import org.orbitrl.memory.plan.BatchShape;
import org.orbitrl.memory.plan.FitAdvisor;
import org.orbitrl.memory.plan.MemoryPlan;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.memory.plan.NodeSpec;
import org.orbitrl.memory.plan.ParallelLayout;
import org.orbitrl.memory.plan.PlanJson;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.memory.plan.PlanTable;
import org.orbitrl.memory.plan.Suggestion;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code orbit plan}: whether a job fits a node, per GPU and category, before anything is loaded.
 * Exit code 0 when it fits, {@value #DOES_NOT_FIT} when it does not (the refusal, with what would
 * make it fit, is printed), 1 for bad input.
 */
@Command(name = "plan", mixinStandardHelpOptions = true, sortOptions = false,
        description = {"Plans a job's GPU memory per category and says whether it fits the node.",
                "Base formats: bf16, int4, fp4, mxfp4, nvfp4, fp8, native, or family=format pairs "
                        + "(experts=int4,attention=fp8). Nodes: 8xB200, 8xH200, 1xH200, 8xH100 (any count), or NxSIZE "
                        + "(8x96GB, 4x80GiB). Exit code 0: fits; 3: does not fit; 1: bad input."})
public final class PlanCommand implements Callable<Integer> {
    /** Exit code of a job that does not fit. */
    public static final int DOES_NOT_FIT = 3;

    @Spec
    CommandSpec spec;

    @Option(names = "--model", paramLabel = "CONFIG_OR_DIR",
            description = "config.json of the model, or the directory holding it (or give --job)")
    Path model;

    @Option(names = "--job", paramLabel = "FILE.yaml", description = "a job file: planned as the daemon plans it when the"
            + " job is to run (its model, base format, adapter and its targets, batch, placement, memory section and KV"
            + " cache; a placement or base format its runner refuses is refused with the runner's message); the other job"
            + " options are ignored, --node replaces the devices it would be planned on")
    Path job;

    @Option(names = "--node", description = "GPU node (default: 8xB200; with --job, the job's devices of this machine's"
            + " GPU, or H200s where none is visible)")
    String node;

    @Option(names = "--base", defaultValue = "native", description = "storage format of the frozen base (default: ${DEFAULT-VALUE})")
    String base;

    @Option(names = "--adapter", defaultValue = "lora:32",
            description = "lora:RANK or oft:BLOCK [:attention+shared+dense+experts or :q_proj+v_proj+experts.down_proj+...]"
                    + "[:f32], full, none (default: ${DEFAULT-VALUE})")
    String adapter;

    @Option(names = "--prompts", defaultValue = "64", description = "prompts per step (default: ${DEFAULT-VALUE})")
    int prompts;

    @Option(names = "--samples", defaultValue = "8", description = "samples per prompt (default: ${DEFAULT-VALUE})")
    int samples;

    @Option(names = "--prompt-len", defaultValue = "1024", description = "longest prompt, tokens (default: ${DEFAULT-VALUE})")
    int promptLen;

    @Option(names = "--response-len", defaultValue = "4096", description = "longest response, tokens (default: ${DEFAULT-VALUE})")
    int responseLen;

    @Option(names = "--micro-batch", defaultValue = "1", description = "sequences per training micro-batch (default: ${DEFAULT-VALUE})")
    int microBatch;

    @Option(names = "--ep", description = "expert-parallel size (default: as many GPUs as divide the expert count)")
    Integer ep;

    @Option(names = "--tp", defaultValue = "1", description = "tensor-parallel size (default: ${DEFAULT-VALUE})")
    int tp;

    @Option(names = "--split", paramLabel = "ROLLOUT:TRAIN", description = "separate rollout and training GPUs (default: colocated)")
    String split;

    @Option(names = "--chunk", defaultValue = "8", description = "experts dequantized at once (default: ${DEFAULT-VALUE})")
    int chunk;

    @Option(names = "--recompute", negatable = true, defaultValue = "true", fallbackValue = "true",
            description = "recompute activations in backward (default: on; --no-recompute keeps them)")
    boolean recompute;

    @Option(names = "--offload-inputs", description = "with recompute, the recomputed layers' inputs wait in host memory"
            + " (a job's memory.offload_inputs; default: off)")
    boolean offloadInputs;

    @Option(names = "--kv-dtype", defaultValue = "bf16", description = "KV cache element type: bf16, fp8, f32 (default: ${DEFAULT-VALUE};"
            + " a job's rollout engines hold what its sampling.kv_cache says, f32 or bf16, and its own plan counts that)")
    String kvDtype;

    @Option(names = "--reserve", paramLabel = "GiB", description = "runtime reserve per GPU (default: 2 GiB + 3%% of the GPU)")
    Double reserveGib;

    @Option(names = "--exact", description = "plan for the CUDA backend in exact mode (-Dorbit.cuda.exact=true): its kernels'"
            + " scratch, no dequantization chunks (default: off)")
    boolean exact;

    @Option(names = "--json", description = "print one JSON object instead of the table")
    boolean json;

    @Override
    public Integer call() throws org.orbitrl.scheduler.job.JobException {
        if ((job == null) == (model == null)) {
            throw new IllegalArgumentException("give the job to plan with --model (and the job options) or with --job FILE.yaml,"
                    + " one of the two");
        }
        PlanRequest req = job != null ? jobRequest() : request();
        MemoryPlan plan = MemoryPlanner.plan(req);
        java.util.List<Suggestion> suggestions = FitAdvisor.suggest(plan);
        PrintWriter out = spec.commandLine().getOut();
        if (json) {
            out.println(PlanJson.text(plan, suggestions));
        } else {
            out.print(plan.fits() ? PlanTable.render(plan) : PlanTable.refusal(plan, suggestions));
        }
        out.flush();
        return plan.fits() ? 0 : DOES_NOT_FIT;
    }

    /**
     * The job file's plan request, as its runner makes it; on {@code --node} when given (its layout kept). What the
     * runner refuses before loading is refused with its message.
     */
    PlanRequest jobRequest() throws org.orbitrl.scheduler.job.JobException {
        org.orbitrl.scheduler.job.JobSpec spec = CommandFiles.readJob(job);
        PlanRequest req = org.orbitrl.scheduler.loop.JobPlanning.request(spec);
        return node == null ? req : req.withNode(NodeSpec.parse(node), req.layout());
    }

    PlanRequest request() {
        ModelSpec s = ConfigLoader.load(model);
        NodeSpec n = NodeSpec.parse(node == null ? "8xB200" : node);
        int rollout = 0;
        int train = 0;
        if (split != null) {
            String[] f = split.split(":");
            if (f.length != 2) {
                throw new IllegalArgumentException("--split '" + split + "': expected ROLLOUT:TRAIN GPU counts, e.g. 4:4");
            }
            rollout = number("--split", f[0]);
            train = number("--split", f[1]);
            if (rollout <= 0 || train <= 0) {
                throw new IllegalArgumentException("--split '" + split + "': both groups need at least one GPU");
            }
        }
        ParallelLayout auto = ParallelLayout.auto(s, n, rollout, train);
        ParallelLayout layout = new ParallelLayout(ep == null ? auto.expertParallel() : ep, tp, rollout, train);
        DType kv = switch (kvDtype.toLowerCase(Locale.ROOT)) {
            case "bf16" -> DType.BF16;
            case "fp8", "f8e4m3" -> DType.F8E4M3;
            case "f32" -> DType.F32;
            default -> throw new IllegalArgumentException("--kv-dtype '" + kvDtype + "': expected bf16, fp8 or f32");
        };
        long reserve = -1;
        if (reserveGib != null) {
            if (!(reserveGib >= 0) || reserveGib > 1e6) {
                throw new IllegalArgumentException("--reserve " + reserveGib + ": expected GiB, at least 0");
            }
            reserve = (long) (reserveGib * (1L << 30));
        }
        return PlanRequest.defaults(s, model, n)
                .withBase(BaseFormat.parse(base, s))
                .withAdapter(AdapterSpec.parse(adapter))
                .withBatch(new BatchShape(prompts, samples, promptLen, responseLen, microBatch))
                .withLayout(layout)
                .withRecompute(recompute)
                .withExpertChunk(chunk)
                .withKvDtype(kv)
                .withReserve(reserve)
                .withExact(exact)
                .withOffloadedInputs(offloadInputs);
    }

    private static int number(String opt, String s) {
        try {
            return Integer.parseInt(s.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(opt + ": '" + s + "' is not a whole number");
        }
    }
}
