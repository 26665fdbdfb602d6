package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.cuda.nvrtc._nvrtcProgram;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.PointerPointer;
import org.bytedeco.javacpp.SizeTPointer;
import org.orbitrl.kernels.cuda.CudaCheck;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.ref.Reference;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

import static org.bytedeco.cuda.global.nvrtc.*;

/**
 * Compiles CUDA C with NVRTC for one compute capability and caches the result on disk, keyed by
 * a hash of the source, the options and the NVRTC version: a second process (or a second run)
 * loads the cached binary instead of compiling. Produces a CUBIN for the device's own
 * architecture ({@code sm_90} on an H100/H200) when NVRTC supports it, else PTX for the newest
 * virtual architecture it supports, which the driver compiles when the module loads.
 */
public final class KernelCompiler {

    /** A compiled image: CUBIN or PTX bytes (PTX is NUL-terminated, as cuModuleLoadData wants). */
    public record Image(byte[] bytes, boolean ptx, String arch, boolean fromCache) {
    }

    private final Path cacheDir;
    private final String arch;
    private final int archNumber;
    private final boolean cubin;
    private final String nvrtcVersion;

    public KernelCompiler(Path cacheDir, int ccMajor, int ccMinor) {
        this.cacheDir = cacheDir;
        int[] major = new int[1];
        int[] minor = new int[1];
        CudaCheck.nvrtc(nvrtcVersion(major, minor), "nvrtcVersion");
        this.nvrtcVersion = major[0] + "." + minor[0];
        int cc = ccMajor * 10 + ccMinor;
        int[] count = new int[1];
        CudaCheck.nvrtc(nvrtcGetNumSupportedArchs(count), "nvrtcGetNumSupportedArchs");
        int[] archs = new int[count[0]];
        CudaCheck.nvrtc(nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs", count[0]);
        int best = -1;
        boolean exact = false;
        for (int a : archs) {
            if (a == cc) {
                exact = true;
            }
            if (a <= cc && a > best) {
                best = a;
            }
        }
        if (best < 0) {
            throw new IllegalStateException("NVRTC " + nvrtcVersion + " supports none of the architectures up to the device's sm_" + cc);
        }
        this.cubin = exact;
        this.arch = exact ? "sm_" + cc : "compute_" + best;
        this.archNumber = exact ? cc : best;
    }

    /** The {@code --gpu-architecture} value used: {@code sm_90}, or {@code compute_XX} for PTX. */
    public String arch() {
        return arch;
    }

    /** The architecture as a number: 90 for {@code sm_90} or {@code compute_90} ({@code __CUDA_ARCH__} / 10). */
    public int archNumber() {
        return archNumber;
    }

    /** Compiles (or loads from the cache) {@code source}; {@code name} names it in errors and logs. */
    public Image compile(String name, String source) {
        String[] options = {"--gpu-architecture=" + arch, "-std=c++17", "--fmad=true", "-default-device"};
        String key = sha256(source + "\0" + String.join(" ", options) + "\0nvrtc " + nvrtcVersion);
        Path file = cacheDir.resolve(name.replaceAll("[^A-Za-z0-9_.-]", "_") + "-" + key.substring(0, 24) + (cubin ? ".cubin" : ".ptx"));
        if (Files.isRegularFile(file)) {
            try {
                return new Image(Files.readAllBytes(file), !cubin, arch, true);
            } catch (IOException e) {
                throw new UncheckedIOException("cannot read cached kernel " + file, e);
            }
        }
        byte[] bytes = nvrtcCompile(name, source, options);
        store(file, bytes);
        return new Image(bytes, !cubin, arch, false);
    }

    private byte[] nvrtcCompile(String name, String source, String[] options) {
        _nvrtcProgram prog = new _nvrtcProgram();
        BytePointer src = new BytePointer(source);
        BytePointer progName = new BytePointer(name);
        CudaCheck.nvrtc(nvrtcCreateProgram(prog, src, progName, 0, (PointerPointer<?>) null, (PointerPointer<?>) null),
                "nvrtcCreateProgram " + name, source.length() + " chars");
        try {
            PointerPointer<BytePointer> opts = new PointerPointer<>(options);
            int err = nvrtcCompileProgram(prog, options.length, opts);
            Reference.reachabilityFence(opts);
            if (err != 0) {
                throw new IllegalStateException("NVRTC could not compile " + name + " for " + arch + ":\n" + log(prog));
            }
            SizeTPointer size = new SizeTPointer(1);
            byte[] out;
            if (cubin) {
                CudaCheck.nvrtc(nvrtcGetCUBINSize(prog, size), "nvrtcGetCUBINSize " + name);
                out = new byte[Math.toIntExact(size.get())];
                CudaCheck.nvrtc(nvrtcGetCUBIN(prog, out), "nvrtcGetCUBIN " + name, out.length);
            } else {
                CudaCheck.nvrtc(nvrtcGetPTXSize(prog, size), "nvrtcGetPTXSize " + name);
                out = new byte[Math.toIntExact(size.get())];
                CudaCheck.nvrtc(nvrtcGetPTX(prog, out), "nvrtcGetPTX " + name, out.length);
            }
            return out;
        } finally {
            CudaCheck.nvrtc(nvrtcDestroyProgram(prog), "nvrtcDestroyProgram " + name);
            Reference.reachabilityFence(src);
            Reference.reachabilityFence(progName);
        }
    }

    private static String log(_nvrtcProgram prog) {
        SizeTPointer size = new SizeTPointer(1);
        if (nvrtcGetProgramLogSize(prog, size) != 0) {
            return "(no log)";
        }
        byte[] log = new byte[Math.toIntExact(size.get())];
        if (nvrtcGetProgramLog(prog, log) != 0) {
            return "(no log)";
        }
        int n = log.length;
        while (n > 0 && log[n - 1] == 0) {
            n--;
        }
        return new String(log, 0, n, StandardCharsets.UTF_8);
    }

    private static void store(Path file, byte[] bytes) {
        try {
            Files.createDirectories(file.getParent());
            Path tmp = Files.createTempFile(file.getParent(), file.getFileName().toString(), ".tmp");
            Files.write(tmp, bytes);
            Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (IOException e) {
            // The cache is an optimisation: a read-only or full disk costs a recompile next time, nothing more.
            System.getLogger(KernelCompiler.class.getName()).log(System.Logger.Level.WARNING,
                    "cannot write kernel cache " + file + ": " + e);
        }
    }

    private static String sha256(String s) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8)));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 missing from the JDK", e);
        }
    }
}
