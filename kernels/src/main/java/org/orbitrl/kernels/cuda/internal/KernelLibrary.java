package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.cuda.cudart.CUfunc_st;
import org.bytedeco.cuda.cudart.CUmod_st;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.SizeTPointer;
import org.orbitrl.kernels.cuda.CudaCheck;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.ref.Reference;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static org.bytedeco.cuda.global.cudart.*;

/**
 * The kernel sources of the CUDA backend ({@code org/orbitrl/kernels/cuda/*.cu} on the class
 * path, each prefixed with {@code common.cuh}), compiled on first use, loaded as modules into the
 * current context and looked up by name. A line {@code #include "name.cuh"} of a source is replaced
 * by that header of the same folder (helpers two kernel files share); NVRTC sees one text, and the
 * disk cache's key covers the headers. Not thread-safe: the owning backend serialises calls.
 *
 * <p>Dependent launches: while on, each kernel that waits for its predecessor ({@link Kernel#waitsForPredecessor})
 * is launched with programmatic stream serialization allowed, so that its blocks may start while the
 * kernel before it on the stream still runs (a stream capture turns this into a programmatic edge of
 * the graph). Needs kernels built for sm_90 or newer, where {@code pdl_enter()} is not empty.
 */
public final class KernelLibrary implements AutoCloseable {
    private static final String RESOURCES = "/org/orbitrl/kernels/cuda/";
    /** The switch of dependent launches: {@code on}, {@code off}, or unset for on where the kernels are built for sm_90 or newer. */
    public static final String DEPENDENT_LAUNCH_PROPERTY = "orbit.cuda.pdl";
    /** The first architecture ({@code __CUDA_ARCH__} / 10) with programmatic dependent launch. */
    static final int DEPENDENT_LAUNCH_ARCH = 90;
    /**
     * Where a dependent-launch kernel lets the next one start: {@code start} (the default: in {@code pdl_enter()}, right
     * after its wait) or {@code exit} (when each of its blocks exits; the kernels built with {@code
     * ORBIT_PDL_TRIGGER_AT_EXIT}). Read once, when a library is made. Only where dependent launches are on does it
     * matter, and it never changes what a kernel reads.
     */
    public static final String DEPENDENT_TRIGGER_PROPERTY = "orbit.cuda.pdlTrigger";
    /**
     * The kernel timeline: {@code on} builds every kernel with {@code ORBIT_TRACE} (common.cuh: each block records its
     * launch, SM and the global timer at its start, its wait's return and its end into the buffer {@link #traceInto}
     * names), {@code off} or unset builds them without. Read once, when a library is made; a traced build is a
     * diagnostic (each block takes an atomic and a few stores), never a default.
     */
    public static final String TRACE_PROPERTY = "orbit.cuda.trace";
    /**
     * The L2 policy of the frozen weights' streams: {@code on} or unset builds every kernel with {@code ORBIT_L2_STREAM}
     * (common.cuh's {@code ld_stream}: the products' weight loads marked evict-first in the L2, so that a decode step's
     * weights pass through it without pushing out what is read again: the kernels' code, the caches' rows, the
     * activations), {@code off} builds plain loads. Read once, when a library is made; the same values either way. On an
     * H100 the Qwen3-30B-A3B step at one sequence took 2.712 ms with it against 2.830-2.891 ms without (BENCHMARKS).
     */
    public static final String L2_STREAM_PROPERTY = "orbit.cuda.l2Stream";
    /**
     * The routers' top-k selection (router.cuh's {@code router_select_warp}): {@code on} or unset builds every kernel
     * with {@code ORBIT_ROUTER_REGS}, a warp's picks from the logits held in its lanes' registers (two warp reductions a
     * pick, each lane writing its own pick once) where E <= 384 and top k <= 32; {@code off}, the rescans of shared
     * memory (a shuffle tree a pick, lane 0 writing each pick and then dividing what it wrote). The same values and
     * experts. Read once, when a library is made. On an H100 the Qwen3-30B-A3B step at one sequence took 2.668-2.687 ms
     * with it against 2.725-2.735 ms without (two JVMs on one machine, BENCHMARKS); the router's top 8 of 128 2.7 µs
     * against 3.7.
     */
    public static final String ROUTER_REGS_PROPERTY = "orbit.cuda.routerRegs";

    private final KernelCompiler compiler;
    private final int arch; // the compiled architecture as a number (90 for sm_90)
    private final Map<String, CUmod_st> modules = new HashMap<>();
    private final Map<String, CUfunc_st> functions = new HashMap<>();
    private final Map<String, Integer> codeBytes = new HashMap<>(); // kernel name -> .text bytes of the loaded modules' cubins
    private long compileNanos;
    private int compiled;
    private int cached;
    private boolean dependentLaunches;
    private final boolean triggerAtExit = triggerAtExit(System.getProperty(DEPENDENT_TRIGGER_PROPERTY));
    private final boolean traced = traced(System.getProperty(TRACE_PROPERTY));
    private final boolean streamed = streamed(System.getProperty(L2_STREAM_PROPERTY));
    private final boolean routerRegs = routerRegs(System.getProperty(ROUTER_REGS_PROPERTY));

    /** A library with dependent launches on or off as {@code dependentLaunches} (see {@link #dependentLaunches(boolean)}). */
    public KernelLibrary(KernelCompiler compiler, boolean dependentLaunches) {
        this(compiler, compiler.archNumber(), dependentLaunches);
    }

    /** {@code compiler} may be null where nothing is launched (the launch path's own tests). */
    KernelLibrary(KernelCompiler compiler, int arch, boolean dependentLaunches) {
        this.compiler = compiler;
        this.arch = arch;
        dependentLaunches(dependentLaunches);
    }

    /**
     * Whether dependent launches are on, from the value of {@value #DEPENDENT_LAUNCH_PROPERTY}
     * ({@code on}, {@code off} or null: off) for kernels built for {@code arch} (90 for sm_90). Off by
     * default: on the H200 the captured decode steps of the Qwen3-30B-A3B bench were no faster with
     * them (batch 1: 3.321 against 3.312 ms) and slower at batch 64 (19.59 against 18.56 ms).
     */
    public static boolean dependentLaunchesFor(String property, int arch) {
        boolean on = dependentLaunchesAsked(property);
        if (on) {
            requireDependentArch(arch);
        }
        return on;
    }

    /** The value of {@value #DEPENDENT_LAUNCH_PROPERTY} as asked: {@code on} true, {@code off} or null false, else an error naming it. */
    public static boolean dependentLaunchesAsked(String property) {
        return twoWay(DEPENDENT_LAUNCH_PROPERTY, property, "on", "off", "on or off");
    }

    /** A two-valued switch's value: {@code yes} true, {@code no}, null or empty false, else an error naming the key and what it takes. */
    private static boolean twoWay(String key, String value, String yes, String no, String expected) {
        if (value == null || value.isEmpty() || value.equals(no)) {
            return false;
        }
        if (value.equals(yes)) {
            return true;
        }
        throw new IllegalArgumentException("-D" + key + "=" + value + ": expected " + expected);
    }

    private static void requireDependentArch(int arch) {
        if (arch < DEPENDENT_LAUNCH_ARCH) {
            throw new IllegalArgumentException("dependent launches (" + DEPENDENT_LAUNCH_PROPERTY + "=on) need kernels built for sm_"
                    + DEPENDENT_LAUNCH_ARCH + " or newer; these are built for architecture " + arch);
        }
    }

    /** {@value #DEPENDENT_TRIGGER_PROPERTY} as given: {@code exit} true, {@code start} or unset false, else an error naming it. */
    static boolean triggerAtExit(String property) {
        return twoWay(DEPENDENT_TRIGGER_PROPERTY, property, "exit", "start", "start or exit");
    }

    /** {@value #TRACE_PROPERTY} as given: {@code on} true, {@code off} or unset false, else an error naming it. */
    static boolean traced(String property) {
        return twoWay(TRACE_PROPERTY, property, "on", "off", "on or off");
    }

    /** {@value #L2_STREAM_PROPERTY} as given: {@code on} or unset true, {@code off} false, else an error naming it. */
    static boolean streamed(String property) {
        return !twoWay(L2_STREAM_PROPERTY, property, "off", "on", "on or off");
    }

    /** {@value #ROUTER_REGS_PROPERTY} as given: {@code on} or unset true, {@code off} false, else an error naming it. */
    static boolean routerRegs(String property) {
        return !twoWay(ROUTER_REGS_PROPERTY, property, "off", "on", "on or off");
    }

    /** Whether this library's kernels load the frozen weights' streams evict-first ({@value #L2_STREAM_PROPERTY}). */
    public boolean streamed() {
        return streamed;
    }

    /**
     * The machine code of kernel {@code name} in its loaded module's cubin ({@link CubinText}), in bytes; -1 where no loaded
     * module holds it as a cubin (not loaded yet, or loaded from PTX).
     */
    public int codeBytes(String name) {
        return codeBytes.getOrDefault(name, -1);
    }

    /** Whether this library's kernels are built to record the kernel timeline ({@value #TRACE_PROPERTY}). */
    public boolean traced() {
        return traced;
    }

    /** Words of a module's trace buffer before its first record, and of a record (common.cuh's ORBIT_TRACE_HEAD, _WORDS). */
    public static final int TRACE_HEAD = 16;
    public static final int TRACE_WORDS = 16;
    /** Points of its own a kernel may mark (common.cuh's ORBIT_TRACE_MARKS, a record's last words). */
    public static final int TRACE_MARKS = 6;
    /** Records a module's buffer holds (common.cuh's ORBIT_TRACE_RECORDS). */
    public static final int TRACE_RECORDS = 131072;

    /** Zeroes every loaded module's count of trace records; the caller has synchronised the device. Only for a traced build. */
    public void traceReset() {
        requireTraced();
        for (Map.Entry<String, CUmod_st> e : modules.entrySet()) {
            long address = traceBuffer(e.getKey(), e.getValue());
            CudaCheck.driver(cuMemsetD32(address, 0, 2), "cuMemsetD32 " + e.getKey() + "/orbit_trace");
        }
    }

    /**
     * The records every loaded module's kernels wrote since {@link #traceReset} (the caller has synchronised the device),
     * module after module, {@link #TRACE_WORDS} words each; {@code dropped[0]} gets how many did not fit.
     */
    public long[] traceRecords(long[] dropped) {
        requireTraced();
        List<long[]> parts = new ArrayList<>();
        long lost = 0;
        int total = 0;
        for (Map.Entry<String, CUmod_st> e : modules.entrySet()) {
            long address = traceBuffer(e.getKey(), e.getValue());
            long taken = readWords(e.getKey(), address, 1)[0];
            int kept = (int) Math.min(taken, TRACE_RECORDS);
            lost += taken - kept;
            if (kept > 0) {
                long[] words = readWords(e.getKey(), address + (long) TRACE_HEAD * Long.BYTES, kept * TRACE_WORDS);
                parts.add(words);
                total += words.length;
            }
        }
        if (dropped != null && dropped.length > 0) {
            dropped[0] = lost;
        }
        long[] all = new long[total];
        int at = 0;
        for (long[] p : parts) {
            System.arraycopy(p, 0, all, at, p.length);
            at += p.length;
        }
        return all;
    }

    private void requireTraced() {
        if (!traced) {
            throw new IllegalStateException("the kernels are built without the timeline: run with -D" + TRACE_PROPERTY + "=on");
        }
    }

    private static long traceBuffer(String file, CUmod_st m) {
        long[] address = new long[1];
        try (SizeTPointer bytes = new SizeTPointer(1)) {
            CudaCheck.driver(cuModuleGetGlobal(address, bytes, m, "orbit_trace"), "cuModuleGetGlobal " + file + "/orbit_trace");
            long expected = ((long) TRACE_HEAD + (long) TRACE_RECORDS * TRACE_WORDS) * Long.BYTES;
            if (bytes.get() != expected) {
                throw new IllegalStateException(file + ".cu: orbit_trace is " + bytes.get() + " bytes, expected " + expected
                        + " (common.cuh's ORBIT_TRACE_HEAD, _RECORDS and _WORDS against KernelLibrary's)");
            }
        }
        return address[0];
    }

    private static long[] readWords(String file, long address, int words) {
        try (LongPointer host = new LongPointer(words)) {
            CudaCheck.driver(cuMemcpyDtoH(host, address, (long) words * Long.BYTES), "cuMemcpyDtoH " + file + "/orbit_trace",
                    words + " words");
            long[] out = new long[words];
            host.get(out);
            return out;
        }
    }

    /** Whether this library's kernels let the next kernel start only as their blocks exit ({@value #DEPENDENT_TRIGGER_PROPERTY}). */
    public boolean triggersAtExit() {
        return triggerAtExit;
    }

    /** Whether dependent launches can be turned on: the kernels are built for sm_90 or newer. */
    public boolean dependentLaunchesSupported() {
        return arch >= DEPENDENT_LAUNCH_ARCH;
    }

    /** Whether kernels that wait for their predecessor are launched as programmatic dependents. */
    public boolean dependentLaunches() {
        return dependentLaunches;
    }

    /**
     * Turns dependent launches on or off for the launches issued from now on (a graph captured
     * before keeps the edges it was captured with). On needs kernels built for sm_90 or newer.
     */
    public void dependentLaunches(boolean on) {
        if (on) {
            requireDependentArch(arch);
        }
        dependentLaunches = on;
    }

    /** A handle on kernel {@code name} of source file {@code file} (without {@code .cu}), resolved at first launch. */
    public Kernel kernel(String file, String name) {
        return new Kernel(this, file, name);
    }

    /** Function {@code kernel} of source file {@code file} (without {@code .cu}). */
    CUfunc_st function(String file, String kernel) {
        String key = file + "/" + kernel;
        CUfunc_st f = functions.get(key);
        if (f == null) {
            f = new CUfunc_st();
            CudaCheck.driver(cuModuleGetFunction(f, module(file), kernel), "cuModuleGetFunction " + key);
            functions.put(key, f);
        }
        return f;
    }

    private CUmod_st module(String file) {
        CUmod_st m = modules.get(file);
        if (m == null) {
            long t0 = System.nanoTime();
            String source = source(file, triggerAtExit, traced, streamed, routerRegs);
            KernelCompiler.Image image = compiler.compile(file, source);
            byte[] bytes = image.bytes();
            if (!image.ptx()) {
                codeBytes.putAll(CubinText.sizes(bytes));
            }
            BytePointer data = new BytePointer(bytes.length + 1L);
            data.put(bytes, 0, bytes.length).put(bytes.length, (byte) 0); // PTX must be NUL-terminated
            m = new CUmod_st();
            CudaCheck.driver(cuModuleLoadData(m, data), "cuModuleLoadData " + file, image.arch(), bytes.length + " bytes");
            Reference.reachabilityFence(data);
            data.deallocate();
            modules.put(file, m);
            compileNanos += System.nanoTime() - t0;
            if (image.fromCache()) {
                cached++;
            } else {
                compiled++;
            }
        }
        return m;
    }

    /** The architecture kernels are built for. */
    public String arch() {
        return compiler.arch();
    }

    /** Modules compiled by NVRTC in this process, loaded from the disk cache, and the time both took. */
    public String stats() {
        return compiled + " compiled, " + cached + " from cache, " + compileNanos / 1_000_000 + " ms";
    }

    /** The text NVRTC compiles for {@code file}.cu: common.cuh, then the file with its headers in place. */
    static String source(String file) {
        return resource("common.cuh") + "\n#line 1 \"" + file + ".cu\"\n" + withHeaders(file + ".cu", resource(file + ".cu"), 0);
    }

    /** {@link #source(String)}, built to let the next kernel start only at a block's exit where {@code triggerAtExit}. */
    static String source(String file, boolean triggerAtExit) {
        return (triggerAtExit ? "#define ORBIT_PDL_TRIGGER_AT_EXIT 1\n" : "") + source(file);
    }

    /** {@link #source(String, boolean)}, built to record the kernel timeline where {@code traced}. */
    static String source(String file, boolean triggerAtExit, boolean traced) {
        return (traced ? "#define ORBIT_TRACE 1\n" : "") + source(file, triggerAtExit);
    }

    /** {@link #source(String, boolean, boolean)}, its frozen weights' streams loaded evict-first where {@code streamed}. */
    static String source(String file, boolean triggerAtExit, boolean traced, boolean streamed) {
        return (streamed ? "#define ORBIT_L2_STREAM 1\n" : "") + source(file, triggerAtExit, traced);
    }

    /** {@link #source(String, boolean, boolean, boolean)}, the routers' selection in registers where {@code routerRegs}. */
    static String source(String file, boolean triggerAtExit, boolean traced, boolean streamed, boolean routerRegs) {
        return (routerRegs ? "#define ORBIT_ROUTER_REGS 1\n" : "") + source(file, triggerAtExit, traced, streamed);
    }

    /** {@code text} of resource {@code name} with each line {@code #include "h.cuh"} replaced by that header (headers may include headers). */
    static String withHeaders(String name, String text, int depth) {
        if (!text.contains("#include")) {
            return text;
        }
        StringBuilder out = new StringBuilder(text.length() * 2);
        String[] lines = text.split("\n", -1);
        for (int i = 0; i < lines.length; i++) {
            String line = lines[i];
            String t = line.strip();
            if (t.startsWith("#include")) {
                int a = t.indexOf('"');
                int b = t.lastIndexOf('"');
                String header = a >= 0 && b > a ? t.substring(a + 1, b) : "";
                if (!header.endsWith(".cuh") || header.contains("/") || depth > 4) {
                    throw new IllegalStateException("kernel source " + name + " line " + (i + 1) + ": " + t
                            + " (only #include \"name.cuh\" of the kernel folder, nested at most 4 deep)");
                }
                out.append("#line 1 \"").append(header).append("\"\n")
                        .append(withHeaders(header, resource(header), depth + 1))
                        .append("\n#line ").append(i + 2).append(" \"").append(name).append("\"\n");
            } else {
                out.append(line);
                if (i < lines.length - 1) {
                    out.append('\n');
                }
            }
        }
        return out.toString();
    }

    static String resource(String name) {
        try (InputStream in = KernelLibrary.class.getResourceAsStream(RESOURCES + name)) {
            if (in == null) {
                throw new IllegalStateException("kernel source " + RESOURCES + name + " is missing from the class path");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read kernel source " + name, e);
        }
    }

    @Override
    public void close() {
        for (Map.Entry<String, CUmod_st> e : modules.entrySet()) {
            CudaCheck.driver(cuModuleUnload(e.getValue()), "cuModuleUnload " + e.getKey());
        }
        modules.clear();
        functions.clear();
    }
}
