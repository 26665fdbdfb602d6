package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.cuda.cudart.CUfunc_st;

/**
 * A kernel of the library, resolved (its module compiled and loaded) on first launch and cached,
 * so the launch path does no lookup and builds no strings.
 */
public final class Kernel {
    private final KernelLibrary library;
    private final String file;
    private final String name;
    private CUfunc_st function;

    Kernel(KernelLibrary library, String file, String name) {
        this.library = library;
        this.file = file;
        this.name = name;
    }

    public String name() {
        return name;
    }

    CUfunc_st function() {
        CUfunc_st f = function;
        if (f == null) {
            f = library.function(file, name);
            function = f;
        }
        return f;
    }

    @Override
    public String toString() {
        return file + ".cu:" + name;
    }
}
