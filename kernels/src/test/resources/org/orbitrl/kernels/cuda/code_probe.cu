// CodeFetchProbe's kernels: one warp a block runs N steps, either as N steps of straight-line code (code_line_*) or as a
// loop over 16 of them (code_loop_*: the same steps from at most a few KiB of code), and thread 0 records the cycles
// between clock64() before and after them. The difference between the two forms at the same N is what fetching the
// straight-line code costs. Two kinds of step: a read of the SM's clock added to a register (a slow chain, 32 bytes of
// SASS a step), and eight fused multiply-adds on eight independent accumulators (an instruction a cycle, 128 bytes a
// step: code_fline_*, code_floop_*).
#define CP_1(op) asm volatile("{ .reg .u32 t; mov.u32 t, %%clock; " op " %0, %0, t; }" : "+r"(a));
#define CP_4(op) CP_1(op) CP_1(op) CP_1(op) CP_1(op)
#define CP_16(op) CP_4(op) CP_4(op) CP_4(op) CP_4(op)
#define CP_64(op) CP_16(op) CP_16(op) CP_16(op) CP_16(op)
#define CP_256(op) CP_64(op) CP_64(op) CP_64(op) CP_64(op)
#define CP_1024(op) CP_256(op) CP_256(op) CP_256(op) CP_256(op)
#define CP_4096(op) CP_1024(op) CP_1024(op) CP_1024(op) CP_1024(op)

#define CP_KERNEL(NAME, BODY)                                                                          \
    extern "C" __global__ void __launch_bounds__(32) NAME(long long* cycles, u32* sink) {              \
        u32 a = threadIdx.x;                                                                           \
        long long t0 = clock64();                                                                      \
        BODY                                                                                           \
        long long t1 = clock64();                                                                      \
        if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;                                            \
        sink[blockIdx.x * 32 + threadIdx.x] = a;                                                       \
    }

#define FP_1(op) a0 = fmaf(a0, b, c); a1 = fmaf(a1, b, c); a2 = fmaf(a2, b, c); a3 = fmaf(a3, b, c); \
    a4 = fmaf(a4, b, c); a5 = fmaf(a5, b, c); a6 = fmaf(a6, b, c); a7 = fmaf(a7, b, c);
#define FP_KERNEL(NAME, BODY)                                                                          \
    extern "C" __global__ void __launch_bounds__(32) NAME(long long* cycles, u32* sink) {              \
        long long t0 = clock64();                                                                      \
        /* the steps' inputs depend on t0 and t1 on their sum, so that no step moves out of the span */ \
        float b = 1.0f + 1e-7f * threadIdx.x + 1e-30f * (float) (t0 & 1), c = 1e-3f * (float) (blockIdx.x + 1); \
        float a0 = threadIdx.x + b, a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3, a4 = a0 + 4, a5 = a0 + 5;    \
        float a6 = a0 + 6, a7 = a0 + 7;                                                                \
        BODY                                                                                           \
        float sum = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;                                             \
        long long t1;                                                                                  \
        asm volatile("mov.u64 %0, %%clock64;" : "=l"(t1) : "f"(sum));                                  \
        if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;                                            \
        sink[blockIdx.x * 32 + threadIdx.x] = __float_as_uint(sum);                                    \
    }
#define FP_4 FP_1(0) FP_1(0) FP_1(0) FP_1(0)
#define FP_16 FP_4 FP_4 FP_4 FP_4
#define FP_64 FP_16 FP_16 FP_16 FP_16
#define FP_256 FP_64 FP_64 FP_64 FP_64
#define FP_1024 FP_256 FP_256 FP_256 FP_256
FP_KERNEL(code_fline_64, FP_64)
FP_KERNEL(code_fline_256, FP_256)
FP_KERNEL(code_fline_512, FP_256 FP_256)
FP_KERNEL(code_fline_768, FP_256 FP_256 FP_256)
FP_KERNEL(code_fline_1024, FP_1024)
FP_KERNEL(code_floop_64, _Pragma("unroll 1") for (int i = 0; i < 64 / 16; i++) { FP_16 })
FP_KERNEL(code_floop_256, _Pragma("unroll 1") for (int i = 0; i < 256 / 16; i++) { FP_16 })
FP_KERNEL(code_floop_512, _Pragma("unroll 1") for (int i = 0; i < 512 / 16; i++) { FP_16 })
FP_KERNEL(code_floop_768, _Pragma("unroll 1") for (int i = 0; i < 768 / 16; i++) { FP_16 })
FP_KERNEL(code_floop_1024, _Pragma("unroll 1") for (int i = 0; i < 1024 / 16; i++) { FP_16 })

CP_KERNEL(code_line_256, CP_256("add.u32"))
CP_KERNEL(code_line_1024, CP_1024("add.u32"))
CP_KERNEL(code_line_4096, CP_4096("add.u32"))
CP_KERNEL(code_loop_256, _Pragma("unroll 1") for (int i = 0; i < 256 / 16; i++) { CP_16("add.u32") })
CP_KERNEL(code_loop_1024, _Pragma("unroll 1") for (int i = 0; i < 1024 / 16; i++) { CP_16("add.u32") })
CP_KERNEL(code_loop_4096, _Pragma("unroll 1") for (int i = 0; i < 4096 / 16; i++) { CP_16("add.u32") })
// another 128 KiB of straight-line code: run between two launches of a probe, it takes the SMs' instruction caches
CP_KERNEL(code_evict, CP_4096("xor.b32"))
