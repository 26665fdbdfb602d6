package org.orbitrl.kernels.cuda;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.cuda.internal.Kernel;
import org.orbitrl.kernels.cuda.internal.Launcher;

import java.util.Arrays;

/**
 * What fetching a kernel's code costs a launch that runs it once: code_probe.cu's chains of N steps as straight-line code
 * (32 bytes a step) and as a loop (the same steps from 1 KiB of code), one warp on each SM, in three states of the
 * caches: warm (the same kernel just ran), the code in the L2 but not in the SMs' instruction caches (another 128 KiB
 * kernel ran between), and the code in DRAM only (512 MiB written before and after that kernel). Cycles of the SM clock
 * between the chain's first and last step, median over the blocks, median of 9 launches; the straight line's excess over
 * the loop, per KiB of its code, is the fetch's cost.
 */
public final class CodeFetchProbe {
    private CodeFetchProbe() {
    }

    public static void main(String[] args) {
        if (!Cuda.available()) {
            System.out.println("CodeFetchProbe: no CUDA device: " + Cuda.unavailableReason());
            return;
        }
        try (CudaBackend gpu = new CudaBackend()) {
            CudaContext ctx = gpu.context();
            int grid = ctx.device.multiprocessors();
            Tensor cycles = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.I64, grid);
            Tensor sink = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.I32, grid * 32L);
            Tensor flush = ctx.allocator.allocate(MemoryCategory.ACTIVATIONS, DType.U8, 512L << 20);
            Kernel evict = ctx.kernel("code_probe", "code_evict");
            System.out.printf("%d blocks of one warp; cycles of the chain, median over blocks, median of 9 launches%n", grid);
            System.out.println("| steps | code KiB | form | warm | code in L2 | code in DRAM |");
            System.out.println("|---|---|---|---|---|---|");
            String[][] kinds = {{"code_line_", "code_loop_", "32"}, {"code_fline_", "code_floop_", "128"}};
            for (String[] kind : kinds)
            for (int n : kind[2].equals("32") ? new int[]{1024, 4096} : new int[]{64, 256, 512, 768, 1024}) {
                int stepBytes = Integer.parseInt(kind[2]);
                long[][] byForm = new long[2][];
                for (int f = 0; f < 2; f++) {
                    String name = (f == 0 ? kind[0] : kind[1]) + n;
                    Kernel k = ctx.kernel("code_probe", name);
                    long[] state = new long[3];
                    for (int s = 0; s < 3; s++) {
                        long[] runs = new long[9];
                        for (int i = -1; i < runs.length; i++) {
                            Launcher.launch(k, ctx.stream.handle(), grid, 1, 32, 0, cycles, sink);
                            if (s == 2) {
                                ctx.allocator.zero(flush);
                            }
                            if (s >= 1) {
                                Launcher.launch(evict, ctx.stream.handle(), grid, 1, 32, 0, cycles, sink);
                            }
                            if (s == 2) {
                                ctx.allocator.zero(flush);
                            }
                            Launcher.launch(k, ctx.stream.handle(), grid, 1, 32, 0, cycles, sink);
                            long[] c = ctx.allocator.toHost(cycles).toLongArray();
                            Arrays.sort(c);
                            if (i >= 0) {
                                runs[i] = c[c.length / 2];
                            }
                        }
                        Arrays.sort(runs);
                        state[s] = runs[runs.length / 2];
                    }
                    byForm[f] = state;
                    System.out.printf("| %d | %s | %s | %d | %d | %d |%n", n, f == 0 ? String.valueOf(n * stepBytes / 1024) : "few",
                            name, state[0], state[1], state[2]);
                }
                double kib = n * stepBytes / 1024.0;
                System.out.printf("| %d | | excess a KiB of code | %.0f | %.0f | %.0f |%n", n, (byForm[0][0] - byForm[1][0]) / kib,
                        (byForm[0][1] - byForm[1][1]) / kib, (byForm[0][2] - byForm[1][2]) / kib);
            }
            ctx.allocator.free(flush);
            ctx.allocator.free(sink);
            ctx.allocator.free(cycles);
        }
    }
}
