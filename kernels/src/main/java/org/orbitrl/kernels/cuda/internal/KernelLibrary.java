package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.cuda.cudart.CUfunc_st;
import org.bytedeco.cuda.cudart.CUmod_st;
import org.bytedeco.javacpp.BytePointer;
import org.orbitrl.kernels.cuda.CudaCheck;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.lang.ref.Reference;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.Map;

import static org.bytedeco.cuda.global.cudart.*;

/**
 * The kernel sources of the CUDA backend ({@code org/orbitrl/kernels/cuda/*.cu} on the class
 * path, each prefixed with {@code common.cuh}), compiled on first use, loaded as modules into the
 * current context and looked up by name. Not thread-safe: the owning backend serialises calls.
 */
public final class KernelLibrary implements AutoCloseable {
    private static final String RESOURCES = "/org/orbitrl/kernels/cuda/";

    private final KernelCompiler compiler;
    private final Map<String, CUmod_st> modules = new HashMap<>();
    private final Map<String, CUfunc_st> functions = new HashMap<>();
    private long compileNanos;
    private int compiled;
    private int cached;

    public KernelLibrary(KernelCompiler compiler) {
        this.compiler = compiler;
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
            String source = resource("common.cuh") + "\n#line 1 \"" + file + ".cu\"\n" + resource(file + ".cu");
            KernelCompiler.Image image = compiler.compile(file, source);
            byte[] bytes = image.bytes();
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
