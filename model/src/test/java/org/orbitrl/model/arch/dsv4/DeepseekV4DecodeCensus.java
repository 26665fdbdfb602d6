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

    /** A step's device work, averaged over the steps counted. */
    record Counts(int steps, long operations, long allocations, long copies, long uploads, long uploadBytes, long reads,
                  long readBytes, String byOperation) {
        double perStep(long v) {
            return v / (double) steps;
        }

        String describe(int context) {
            return String.format("context %d: operations %.1f, allocations %.1f, copies %.1f, uploads %.1f (%.1f KB),"
                            + " host reads %.1f (%.1f KB)%n  by operation:%s", context, perStep(operations),
                    perStep(allocations), perStep(copies), perStep(uploads), perStep(uploadBytes) / 1e3, perStep(reads),
                    perStep(readBytes) / 1e3, byOperation);
        }
    }

    /** The counts of {@code steps} decode steps of {@code batch} sequences prefilled with {@code context} tokens. */
    static String census(StrictBackend strict, DeepseekV4Model model, int context, int batch, int steps) {
        return count(strict, model, context, batch, steps).describe(context);
    }

    /** As {@link #census}, the counts themselves. */
    static Counts count(StrictBackend strict, DeepseekV4Model model, int context, int batch, int steps) {
        SplittableRandom r = new SplittableRandom(context);
        List<KvCache> caches = new ArrayList<>();
        for (int b = 0; b < batch; b++) {
            KvCache c = model.newCache(context + steps + 4);
            caches.add(c);
            Tensor t = model.forwardLast(List.of(new CausalLM.Segment(r.ints(context, 0, model.vocabSize()).toArray(), c)));
            strict.allocator().release(t);
        }
        java.util.Map<String, long[]> calls = new java.util.TreeMap<>();
        org.orbitrl.kernels.Backend counting = (org.orbitrl.kernels.Backend) java.lang.reflect.Proxy.newProxyInstance(
                org.orbitrl.kernels.Backend.class.getClassLoader(), new Class<?>[]{org.orbitrl.kernels.Backend.class},
                (self, m, args) -> {
                    if (m.getDeclaringClass() != Object.class && !PASS_THROUGH.contains(m.getName())) {
                        calls.computeIfAbsent(m.getName(), k -> new long[1])[0]++;
                    }
                    try {
                        return m.invoke(strict, args);
                    } catch (java.lang.reflect.InvocationTargetException e) {
                        throw e.getCause();
                    }
                });
        OpProfiler prof = Integer.getInteger("orbit.census.keys", 0) > 0 ? OpProfiler.wrap(counting, () -> { }) : null;
        DeepseekV4Model counted = model.view(prof != null ? prof.backend() : counting);
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
        Counts counts = new Counts(steps, calls.values().stream().mapToLong(v -> v[0]).sum(), a.allocations() - allocs,
                a.copies() - copies, a.uploads() - uploads, a.uploadBytes() - upBytes, a.hostReads() - reads,
                a.hostReadBytes() - readBytes, calls.entrySet().stream()
                        .map(e -> String.format(" %s %.1f", e.getKey(), e.getValue()[0] / (double) steps))
                        .collect(java.util.stream.Collectors.joining()));
        java.util.Map<String, Integer> bySite = a.countSites(false);
        if (bySite != null) {
            bySite.entrySet().stream().sorted((x, y) -> y.getValue() - x.getValue()).forEach(e ->
                    System.out.printf("  %6.1f allocations a step at %s%n", e.getValue() / (double) steps, e.getKey()));
        }
        if (prof != null) {
            System.out.println(prof.report(Integer.getInteger("orbit.census.keys", 0)));
        }
        for (KvCache c : caches) {
            c.close();
        }
        return counts;
    }

    /** Backend methods that are questions or plumbing, not device work. */
    private static final java.util.Set<String> PASS_THROUGH = java.util.Set.of("name", "allocator", "close", "exact",
            "toString", "hashCode", "equals");
}
