package org.orbitrl.model.arch.dsv4;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.orbitrl.kernels.OpProfiler;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.StrictAllocator;
import org.orbitrl.model.StrictBackend;
import org.orbitrl.model.TestSafetensors;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.arch.KvCache;
import org.orbitrl.model.spec.ConfigLoader;
import org.orbitrl.model.spec.ModelSpec;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/**
 * What a DeepSeek V4 decode step asks of a device, counted on the host ({@link StrictBackend}, which takes the device
 * paths): backend operations (about a launch each on the CUDA backend), allocations, copies, uploads and reads back to
 * the host (each a wait for the device), per step, over the fixture's layer kinds at V4's released window and
 * compression rates (window 128, compressed-sparse 4, heavily compressed 128; the fixture's widths, random weights). The counts that grow
 * with the context are the ones a long rollout pays for at every step.
 *
 * <pre>java ... org.orbitrl.model.arch.dsv4.DeepseekV4DecodeCensus [contexts, e.g. 256,2048] [batch] [steps]</pre>
 */
public final class DeepseekV4DecodeCensus {
    private DeepseekV4DecodeCensus() {
    }

    public static void main(String[] args) throws Exception {
        int[] contexts = java.util.Arrays.stream((args.length > 0 ? args[0] : "256,2048").split(","))
                .mapToInt(Integer::parseInt).toArray();
        int batch = args.length > 1 ? Integer.parseInt(args[1]) : 4;
        int steps = args.length > 2 ? Integer.parseInt(args[2]) : 16;
        Path dir = TestSafetensors.fixtures().resolve("deepseek_v4");
        ModelSpec spec = ConfigLoader.load(releasedWindows(dir, java.util.Arrays.stream(contexts).max().orElse(0) + steps + 16));
        try (StrictBackend strict = new StrictBackend()) {
            DeepseekV4Model model = DeepseekV4Model.load(spec, new RandomDeepseekV4(spec, 7), strict);
            System.out.printf("DeepSeek V4 decode census: layers %s, batch %d, %d steps a context (counts a step)%n",
                    java.util.stream.IntStream.range(0, model.layers()).mapToObj(spec::attentionKind).toList(), batch, steps);
            for (int context : contexts) {
                System.out.println(census(strict, model, context, batch, steps));
            }
        }
    }

    /** The fixture's config with V4's released window and rates and room for {@code positions}. */
    static Path releasedWindows(Path fixture, int positions) throws java.io.IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode cfg = (ObjectNode) json.readTree(fixture.resolve("config.json").toFile());
        cfg.put("sliding_window", 128);
        ObjectNode rates = (ObjectNode) cfg.get("compress_rates");
        rates.put("compressed_sparse_attention", 4);
        rates.put("heavily_compressed_attention", 128);
        cfg.put("max_position_embeddings", positions);
        Path dir = Files.createTempDirectory("v4-census");
        json.writeValue(dir.resolve("config.json").toFile(), cfg);
        return dir;
    }

    /** The counts of {@code steps} decode steps of {@code batch} sequences prefilled with {@code context} tokens. */
    static String census(StrictBackend strict, DeepseekV4Model model, int context, int batch, int steps) {
        SplittableRandom r = new SplittableRandom(context);
        List<KvCache> caches = new ArrayList<>();
        for (int b = 0; b < batch; b++) {
            KvCache c = model.newCache(context + steps + 4);
            caches.add(c);
            Tensor t = model.forwardLast(List.of(new CausalLM.Segment(r.ints(context, 0, model.vocabSize()).toArray(), c)));
            strict.allocator().release(t);
        }
        OpProfiler prof = OpProfiler.wrap(strict, () -> { });
        DeepseekV4Model counted = model.view(prof.backend());
        StrictAllocator a = strict.allocator();
        int allocs = a.allocations();
        int uploads = a.uploads();
        long upBytes = a.uploadBytes();
        int reads = a.hostReads();
        long readBytes = a.hostReadBytes();
        int copies = a.copies();
        boolean sites = Boolean.getBoolean("orbit.census.sites");
        a.countSites(sites);
        for (int s = 0; s < steps; s++) {
            List<CausalLM.Segment> segs = new ArrayList<>();
            for (KvCache c : caches) {
                segs.add(new CausalLM.Segment(new int[]{r.nextInt(model.vocabSize())}, c));
            }
            a.release(counted.forwardLast(segs));
        }
        java.util.Map<String, Integer> bySite = a.countSites(false);
        if (bySite != null) {
            bySite.entrySet().stream().sorted((x, y) -> y.getValue() - x.getValue()).forEach(e ->
                    System.out.printf("  %6.1f allocations a step at %s%n", e.getValue() / (double) steps, e.getKey()));
        }
        String ops = prof.report(Integer.getInteger("orbit.census.keys", 0));
        if (Integer.getInteger("orbit.census.keys", 0) > 0) {
            System.out.println(ops);
        }
        int opCount = 0;
        StringBuilder byOp = new StringBuilder();
        boolean in = false;
        for (String line : ops.split("\n")) {
            if (line.startsWith("by operation:")) {
                in = true;
                continue;
            }
            if (line.startsWith("by operation and shapes")) {
                break;
            }
            if (in) {
                String[] f = line.trim().split("\\s+");
                int calls = Integer.parseInt(f[0]);   // "calls N ms M us/call share% name"
                opCount += calls;
                byOp.append(String.format(" %s %.1f", f[f.length - 1], calls / (double) steps));
            }
        }
        for (KvCache c : caches) {
            c.attachment().release();
        }
        return String.format("context %d: operations %.1f, allocations %.1f, copies %.1f, uploads %.1f (%.1f KB),"
                        + " host reads %.1f (%.1f KB)%n  by operation:%s", context, opCount / (double) steps,
                (a.allocations() - allocs) / (double) steps, (a.copies() - copies) / (double) steps,
                (a.uploads() - uploads) / (double) steps, (a.uploadBytes() - upBytes) / 1e3 / steps,
                (a.hostReads() - reads) / (double) steps, (a.hostReadBytes() - readBytes) / 1e3 / steps, byOp);
    }
}
