package org.orbitrl.kernels.cuda.internal;

import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileSystem;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Every kernel source, as {@link KernelLibrary#source} hands it to NVRTC (common.cuh first, headers in place), compiles
 * for sm_90 with the CUDA toolkit's {@code nvcc} (the same front end and ptxas as NVRTC, no GPU needed) without an
 * error, so that a source no GPU has run yet is known to compile. Skipped, with a message, where no {@code nvcc} is found (on PATH, in
 * {@code $CUDA_HOME/bin} or {@code /usr/local/cuda/bin}).
 */
class KernelSourcesCompileTest {
    private static final String SOURCES = "/org/orbitrl/kernels/cuda/";

    /**
     * As a library builds them by default: the weights' streams loaded evict-first ({@code ORBIT_L2_STREAM}), the routers'
     * selection in registers ({@code ORBIT_ROUTER_REGS}).
     */
    @Test
    void everyKernelSourceCompilesForSm90() throws Exception {
        compileAll(false);
    }

    /**
     * The same with the kernel timeline ({@code -Dorbit.cuda.trace=on}): every kernel's record compiles into it; built with
     * plain weight loads ({@code -Dorbit.cuda.l2Stream=off}), so that both of common.cuh's forms of them compile, and the
     * routers' selection by rescans ({@code -Dorbit.cuda.routerRegs=off}), so that both of router.cuh's do.
     */
    @Test
    void everyKernelSourceCompilesTraced() throws Exception {
        compileAll(true);
    }

    private static void compileAll(boolean traced) throws Exception {
        Path nvcc = nvcc();
        assumeTrue(nvcc != null, "no nvcc on PATH, in $CUDA_HOME/bin or /usr/local/cuda/bin: kernel sources not compiled here");
        List<String> names = kernelNames();
        assertTrue(names.size() > 30 && names.contains("paged_mla"), "the kernel sources: " + names);
        Path dir = Files.createTempDirectory(traced ? "orbit-nvcc-trace" : "orbit-nvcc");
        ExecutorService pool = Executors.newFixedThreadPool(Math.max(1, Runtime.getRuntime().availableProcessors()));
        try {
            List<Future<String>> results = new ArrayList<>();
            for (String name : names) {
                results.add(pool.submit(() -> compile(nvcc, dir, name, traced)));
            }
            List<String> failures = new ArrayList<>();
            for (Future<String> f : results) {
                String problem = f.get(10, TimeUnit.MINUTES);
                if (problem != null) {
                    failures.add(problem);
                }
            }
            assertEquals(List.of(), failures, "kernel sources that do not compile cleanly" + (traced ? " (traced)" : ""));
            if (!traced) { // the machine code of a cubin nvcc built, as CubinText reads it: the narrow add-norm is the smaller
                java.util.Map<String, Integer> sizes = CubinText.sizes(Files.readAllBytes(dir.resolve("norm.cubin")));
                int wide = sizes.getOrDefault("add_rmsnorm_v4_f32", -1);
                int narrow = sizes.getOrDefault("add_rmsnorm_v2_f32", -1);
                assertTrue(narrow > 1024 && wide > narrow && wide % 128 == 0, "norm.cubin's .text sizes: " + sizes);
            }
        } finally {
            pool.shutdownNow();
        }
    }

    /**
     * Kernels built with {@code -Dorbit.cuda.pdlTrigger=exit} wait for their predecessor as before and leave the trigger
     * out ({@code norm.cu}'s PTX: {@code griddepcontrol.wait} in both builds, {@code griddepcontrol.launch_dependents}
     * only in the default one). Skipped where no {@code nvcc} is found.
     */
    @Test
    void aTriggerAtExitBuildKeepsTheWaitsAndDropsTheTriggers() throws IOException, InterruptedException {
        Path nvcc = nvcc();
        assumeTrue(nvcc != null, "no nvcc on PATH, in $CUDA_HOME/bin or /usr/local/cuda/bin: kernel sources not compiled here");
        Path dir = Files.createTempDirectory("orbit-nvcc-pdl");
        String[] ptx = new String[2];
        for (int i = 0; i < 2; i++) {
            Path src = dir.resolve("norm" + i + ".cu");
            Path out = dir.resolve("norm" + i + ".ptx");
            Files.writeString(src, KernelLibrary.source("norm", i == 1), StandardCharsets.UTF_8);
            Process p = new ProcessBuilder(nvcc.toString(), "-std=c++17", "-arch=sm_90", "--fmad=true", "-ptx", "-o", out.toString(),
                    src.toString()).redirectErrorStream(true).start();
            String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            assertEquals(0, p.waitFor(), "nvcc -ptx norm.cu" + (i == 1 ? " (trigger at exit)" : "") + ": " + log);
            ptx[i] = Files.readString(out);
        }
        long waits = count(ptx[0], "griddepcontrol.wait");
        assertTrue(waits > 0 && count(ptx[0], "griddepcontrol.launch_dependents") == waits, "the default build: a wait and a trigger each");
        assertEquals(waits, count(ptx[1], "griddepcontrol.wait"), "the trigger-at-exit build keeps every wait");
        assertEquals(0, count(ptx[1], "griddepcontrol.launch_dependents"), "the trigger-at-exit build has no trigger");
    }

    private static long count(String text, String word) {
        return Pattern.compile(Pattern.quote(word)).matcher(text).results().count();
    }

    /**
     * The kernel sources and headers as the class path holds them (the module's resources directory in a build, the jar on
     * a machine that has only the jars), found beside {@code paged_mla.cu}: file names with their extensions ({@code
     * norm.cu}, {@code router.cuh}).
     */
    static List<String> sourceFiles() {
        try {
            URL known = KernelLibrary.class.getResource(SOURCES + "paged_mla.cu");
            assertTrue(known != null, "paged_mla.cu is on the class path under " + SOURCES);
            URI uri = known.toURI();
            if ("jar".equals(uri.getScheme())) {
                try (FileSystem jar = FileSystems.newFileSystem(uri, Map.of())) {
                    return filesIn(jar.getPath(SOURCES));
                }
            }
            return filesIn(Path.of(uri).getParent());
        } catch (IOException | URISyntaxException e) {
            throw new IllegalStateException("cannot list the kernel sources", e);
        }
    }

    private static List<String> filesIn(Path dir) throws IOException {
        try (Stream<Path> files = Files.list(dir)) {
            return files.map(p -> p.getFileName().toString()).filter(n -> n.endsWith(".cu") || n.endsWith(".cuh")).sorted().toList();
        }
    }

    /** The kernel sources' names without {@code .cu} ({@link #sourceFiles}' {@code .cu} files). */
    private static List<String> kernelNames() {
        return sourceFiles().stream().filter(n -> n.endsWith(".cu")).map(n -> n.substring(0, n.length() - 3)).toList();
    }

    /**
     * Null when {@code name}.cu (built with the kernel timeline, plain weight loads and the routers' selection in registers
     * where {@code traced}, else as by default) compiles without an error; else what nvcc said.
     */
    private static String compile(Path nvcc, Path dir, String name, boolean traced) throws IOException, InterruptedException {
        Path src = dir.resolve(name + ".cu");
        Files.writeString(src, KernelLibrary.source(name, false, traced, !traced, !traced), StandardCharsets.UTF_8);
        Process p = new ProcessBuilder(nvcc.toString(), "-std=c++17", "-arch=sm_90", "--fmad=true", "-cubin", "-o", dir.resolve(name + ".cubin").toString(), src.toString()).redirectErrorStream(true).start();
        String log = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        int rc = p.waitFor();
        return rc == 0 ? null : name + ".cu: nvcc exit " + rc + "\n" + log;
    }

    private static Path nvcc() {
        List<Path> candidates = new ArrayList<>();
        String path = System.getenv("PATH");
        if (path != null) {
            for (String d : path.split(java.io.File.pathSeparator)) {
                candidates.add(Path.of(d, "nvcc"));
            }
        }
        String home = System.getenv("CUDA_HOME");
        if (home != null) {
            candidates.add(Path.of(home, "bin", "nvcc"));
        }
        candidates.add(Path.of("/usr/local/cuda/bin/nvcc"));
        for (Path c : candidates) {
            if (Files.isExecutable(c)) {
                return c;
            }
        }
        return null;
    }
}
