// Shared helpers, prepended to every kernel source of the CUDA backend before NVRTC compiles it.
// No system headers: bf16 conversions are done on bits, bit-exact with the Java side (Numerics).

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

#define ORBIT_INF __int_as_float(0x7f800000)

// Device error flag (int[4]): [code, value low, value high, row]. The first error wins.
#define ERR_INDEX_OUT_OF_RANGE 1
#define ERR_POSITION_OUT_OF_RANGE 2
#define ERR_EXPERT_OUT_OF_RANGE 3

__device__ __forceinline__ void report_error(int* err, int code, i64 value, int row) {
    if (err != 0 && atomicCAS(err, 0, code) == 0) {
        err[1] = (int) (value & 0xffffffffLL);
        err[2] = (int) (value >> 32);
        err[3] = row;
    }
}

// The kernel timeline of a traced build (ORBIT_TRACE: KernelLibrary's -Dorbit.cuda.trace=on; without it every macro
// below is empty and no kernel changes). Every kernel's first statement is ORBIT_TRACE_KERNEL(): thread 0 of each block
// takes a record of its module's buffer orbit_trace as the block starts, and as it ends writes the launch's grid id, the
// block and its SM, the global timer at its start, at the return of its wait for the launch before (pdl_enter; 0 where
// it has none), at its end and at up to ORBIT_TRACE_MARKS points of its own (ORBIT_TRACE_MARK(i): thread 0's time there;
// 0 where it did not pass); block 0 also writes the kernel's name. Word 0 counts the records taken (those past
// ORBIT_TRACE_RECORDS are dropped, still counted); the records start at word ORBIT_TRACE_HEAD, ORBIT_TRACE_WORDS words
// each. The host zeroes word 0 and reads the records back between steps (KernelLibrary.traceReset, traceRecords).
#ifdef ORBIT_TRACE
#define ORBIT_TRACE_HEAD 16
#define ORBIT_TRACE_WORDS 16
#define ORBIT_TRACE_NAME 40 // bytes of the name kept (words 5..9)
#define ORBIT_TRACE_MARKS 6 // words 10..15
#define ORBIT_TRACE_RECORDS 131072
__device__ unsigned long long orbit_trace[ORBIT_TRACE_HEAD + (unsigned long long) ORBIT_TRACE_RECORDS * ORBIT_TRACE_WORDS];
__shared__ long long orbit_trace_waited;
__shared__ long long orbit_trace_marks[ORBIT_TRACE_MARKS];

__device__ __forceinline__ long long orbit_trace_now() {
    long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__device__ __forceinline__ bool orbit_trace_lead() {
    return threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
}

struct OrbitTraceBlock {
    const char* name;
    long long start;
    unsigned long long slot;

    __device__ __forceinline__ explicit OrbitTraceBlock(const char* kernel) : name(kernel), start(0), slot(~0ull) {
        if (orbit_trace_lead()) {
            start = orbit_trace_now();
            orbit_trace_waited = 0;
            for (int i = 0; i < ORBIT_TRACE_MARKS; i++) orbit_trace_marks[i] = 0;
            slot = atomicAdd(&orbit_trace[0], 1ull);
        }
    }

    __device__ __forceinline__ ~OrbitTraceBlock() {
        if (!orbit_trace_lead() || slot >= ORBIT_TRACE_RECORDS) return;
        long long end = orbit_trace_now();
        unsigned long long grid;
        unsigned int sm;
        asm volatile("mov.u64 %0, %%gridid;" : "=l"(grid));
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        unsigned long long b = blockIdx.x + (unsigned long long) gridDim.x * (blockIdx.y + (unsigned long long) gridDim.y * blockIdx.z);
        unsigned long long* r = orbit_trace + ORBIT_TRACE_HEAD + slot * ORBIT_TRACE_WORDS;
        r[0] = grid;
        r[1] = b | ((unsigned long long) sm << 40);
        r[2] = (unsigned long long) start;
        r[3] = (unsigned long long) orbit_trace_waited;
        r[4] = (unsigned long long) end;
        for (int i = 0; i < ORBIT_TRACE_MARKS; i++) r[10 + i] = (unsigned long long) orbit_trace_marks[i];
        if (b == 0) {
            unsigned long long words[ORBIT_TRACE_NAME / 8] = {};
            bool done = false;
            for (int i = 0; i < ORBIT_TRACE_NAME; i++) {
                unsigned long long c = done ? 0 : (unsigned char) name[i];
                done = done || c == 0;
                words[i / 8] |= c << (8 * (i % 8));
            }
            for (int i = 0; i < ORBIT_TRACE_NAME / 8; i++) r[5 + i] = words[i];
        }
    }
};

#define ORBIT_TRACE_KERNEL() OrbitTraceBlock orbit_trace_block_(__func__)
#define ORBIT_TRACE_WAITED()                                                                                           \
    do {                                                                                                               \
        if (orbit_trace_lead()) orbit_trace_waited = orbit_trace_now();                                                \
    } while (0)
#define ORBIT_TRACE_MARK(i)                                                                                            \
    do {                                                                                                               \
        if (orbit_trace_lead()) orbit_trace_marks[i] = orbit_trace_now();                                              \
    } while (0)
#else
#define ORBIT_TRACE_KERNEL() ((void) 0)
#define ORBIT_TRACE_WAITED() ((void) 0)
#define ORBIT_TRACE_MARK(i) ((void) 0)
#endif

// Programmatic dependent launch (sm_90+). A kernel launched with programmatic stream serialization
// may start while the kernel before it on the stream still runs: griddepcontrol.wait blocks until that
// kernel has completed and its memory is visible, then launch_dependents lets the next such kernel
// start its blocks. Without the launch attribute both are no-ops. A kernel the host launches this way
// calls pdl_enter() as its first statement, before any read or write of global memory. Built with
// ORBIT_PDL_TRIGGER_AT_EXIT (KernelLibrary's -Dorbit.cuda.pdlTrigger=exit) it leaves launch_dependents out: a
// block then lets the next kernel start when it exits, so that kernel's waiting blocks do not hold an SM's
// slots while this one still has blocks to place. Where the trigger falls never changes what the next
// kernel reads: its own griddepcontrol.wait waits for this kernel's completion either way.
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#ifndef ORBIT_PDL_TRIGGER_AT_EXIT
    asm volatile("griddepcontrol.launch_dependents;");
#endif
#endif
    ORBIT_TRACE_WAITED();
}

// pdl_enter without the trigger, and the trigger alone: a kernel that starts with pdl_enter_late() calls pdl_trigger()
// where its dependents may start (every block, on every path, or exits first), so that their early work does not crowd
// its own first loads (the prepared decode attention: o's weight loads queue in the memory system ahead of its round
// trips). What the dependents read is the same: their wait waits for this kernel's completion. Built with
// ORBIT_PDL_TRIGGER_AT_EXIT the trigger is left out.
__device__ __forceinline__ void pdl_enter_late() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    ORBIT_TRACE_WAITED();
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(ORBIT_PDL_TRIGGER_AT_EXIT)
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// pdl_enter with the trigger first: the next kernel's blocks may start as soon as this one's have, so that a dependent
// with work that needs nothing of this kernel or the ones before it (bgemv_pre1's loads of its frozen weights) does it
// while they run. The wait is the same, and so is what every dependent reads: its own wait still waits for this
// kernel's completion. Built with ORBIT_PDL_TRIGGER_AT_EXIT it leaves the trigger out, as pdl_enter does.
__device__ __forceinline__ void pdl_enter_early() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#ifndef ORBIT_PDL_TRIGGER_AT_EXIT
    asm volatile("griddepcontrol.launch_dependents;");
#endif
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
    ORBIT_TRACE_WAITED();
}

// The parameters every paged decode kernel takes (flash_attention.cu, paged_decode.cu; CudaFlashAttention passes them
// in this order), over a cache of CT values, and their names to pass on.
#define PAGED_DECODE_ARGS(CT)                                                                                          \
    const float *q, i64 qB, i64 qH, const CT *kc, const CT *vc, const int *tables, int maxBlocks, const int *lens,       \
            int blockSize, float *out, i64 oB, i64 oH, int Hq, int Hkv, int D, int Dv, int window, float scale,        \
            const float *sinks, int splits, int splitLen, float *partAcc, float *partMl
#define PAGED_DECODE_PASS                                                                                              \
    q, qB, qH, kc, vc, tables, maxBlocks, lens, blockSize, out, oB, oH, Hq, Hkv, D, Dv, window, scale, sinks, splits, \
            splitLen, partAcc, partMl

// Row of key j of sequence t: j itself (tables null: contiguous keys), or its slot in a paged cache whose block tables
// are i32 [sequences, maxBlocks] (slot = tables[t, j / blockSize] * blockSize + j % blockSize).
__device__ __forceinline__ i64 paged_row(const int* tables, int t, int maxBlocks, int blockSize, int j) {
    return tables != 0 ? (i64) tables[(i64) t * maxBlocks + j / blockSize] * blockSize + j % blockSize : (i64) j;
}

__device__ __forceinline__ float bf16_to_f32(u16 h) {
    return __uint_as_float(((u32) h) << 16);
}

// Four bf16 values (two 32-bit words, the even element in the low half) widened to f32 exactly.
__device__ __forceinline__ float4 bf16x4_to_f32(uint2 u) {
    return make_float4(__uint_as_float(u.x << 16), __uint_as_float(u.x & 0xffff0000u), __uint_as_float(u.y << 16),
                       __uint_as_float(u.y & 0xffff0000u));
}

// Round to nearest even; NaN stays NaN (as Numerics.floatToBf16 and PyTorch).
__device__ __forceinline__ u16 f32_to_bf16_bits(float f) {
    u32 x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return (u16) ((x >> 16) | 0x40u);
    }
    u32 lsb = (x >> 16) & 1u;
    return (u16) ((x + 0x7fffu + lsb) >> 16);
}

// f32_to_bf16_bits(lo) | f32_to_bf16_bits(hi) << 16 in one instruction (sm_80+): cvt.rn rounds every value but a NaN
// the same way (to nearest even, to infinity past the largest bf16), and gives a NaN as the canonical 0x7FFF where
// f32_to_bf16_bits keeps its payload.
__device__ __forceinline__ u32 f32x2_to_bf16x2(float lo, float hi) {
    u32 d;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
}

// sum over j < r, in order, of l[j] * b[j] (one fmaf each from 0) for r a multiple of 4 and l, b 16-byte aligned: a
// LoRA term's dot of a pair's x . A^T with a row of B. Each 4 * C values' loads are issued before any is used.
template <int C = 8>
__device__ __forceinline__ float lora_dot(const float* l, const float* b, int r) {
    float t = 0.0f;
    for (int j0 = 0; j0 < r; j0 += 4 * C) {
        float4 lv[C], bv[C];
#pragma unroll
        for (int i = 0; i < C; i++) {
            if (j0 + 4 * i < r) {
                lv[i] = ((const float4*) (l + j0))[i];
                bv[i] = ((const float4*) (b + j0))[i];
            }
        }
#pragma unroll
        for (int i = 0; i < C; i++) {
            if (j0 + 4 * i < r) {
                t = fmaf(lv[i].x, bv[i].x, t);
                t = fmaf(lv[i].y, bv[i].y, t);
                t = fmaf(lv[i].z, bv[i].z, t);
                t = fmaf(lv[i].w, bv[i].w, t);
            }
        }
    }
    return t;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

// Sum over the block; every thread gets the result. sh: 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* sh) {
    int lane = threadIdx.x & 31;
    int wid = threadIdx.x >> 5;
    int nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = (int) threadIdx.x < nw ? sh[threadIdx.x] : 0.0f;
    if (wid == 0) v = warp_sum(v);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    v = sh[0];
    __syncthreads();
    return v;
}

__device__ __forceinline__ float block_max(float v, float* sh) {
    int lane = threadIdx.x & 31;
    int wid = threadIdx.x >> 5;
    int nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = (int) threadIdx.x < nw ? sh[threadIdx.x] : -ORBIT_INF;
    if (wid == 0) v = warp_max(v);
    if (threadIdx.x == 0) sh[0] = v;
    __syncthreads();
    v = sh[0];
    __syncthreads();
    return v;
}

// 1 / sqrt(mean(xr[0 .. h)^2) + eps) of a row, by the whole block (every thread gets it); sh: 32 floats
// of shared memory. The rmsnorm's scale: out = w * (x * inv).
__device__ __forceinline__ float row_rms_inv(const float* xr, int h, float eps, float* sh) {
    float ss = 0.0f;
    for (int i = threadIdx.x; i < h; i += blockDim.x) {
        float v = xr[i];
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    return 1.0f / sqrtf(ss / (float) h + eps);
}

#define GRID_STRIDE(i, n) \
    for (i64 i = (i64) blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64) gridDim.x * blockDim.x)

// Tensor-core helpers (sm_80+). smem_addr: the 32-bit shared-memory address of a generic pointer into shared memory.
// ldsm_x4: four 8x8 b16 matrices (lanes 8i .. 8i + 7 address the rows of matrix i; d[i] is this lane's pair of
// matrix i, row lane / 4, columns 2 (lane % 4) and + 1), ldsm_x4_trans the same transposed (rows 2 (lane % 4) and
// + 1, column lane / 4). mma_bf16_16816: c += A . B, mma m16n8k16 with bf16 A (16 x 16: a0..a3) and B (16 x 8:
// b0, b1), f32 accumulation.
__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

__device__ __forceinline__ void ldsm_x4(u32 addr, u32* d) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(addr)
                 : "memory");
}

__device__ __forceinline__ void ldsm_x4_trans(u32 addr, u32* d) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(addr)
                 : "memory");
}

__device__ __forceinline__ void mma_bf16_16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Thread block clusters (sm_90+; a launch with a cluster dimension): cluster_sync, every thread of every block of the
// cluster arriving (release) and waiting (acquire), so that what a block wrote to its shared memory, and to global
// memory, before it is visible to the cluster's blocks after; cluster_addr, the address of this block's shared variable
// at smem (smem_addr) in the shared memory of the cluster's block `rank`; ld_cluster_f32, a load from such an address.
// Below sm_90 they trap (the launchers take them only on sm_90 and later).
__device__ __forceinline__ void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#else
    __trap();
#endif
}

__device__ __forceinline__ u32 cluster_addr(u32 smem, u32 rank) {
    u32 r = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(smem), "r"(rank));
#else
    __trap();
#endif
    return r;
}

__device__ __forceinline__ float ld_cluster_f32(u32 addr) {
    float v = 0.0f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
#else
    __trap();
#endif
    return v;
}

// tf32_bits: x rounded to tf32 (cvt.rna: to nearest, ties away from zero), its bit pattern. mma_tf32_1688: c += A . B,
// mma m16n8k8 with tf32 A (16 x 8: a0..a3) and B (8 x 8: b0, b1) given as bit patterns, f32 accumulation.
__device__ __forceinline__ u32 tf32_bits(float x) {
    u32 r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
}

__device__ __forceinline__ void mma_tf32_1688(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// A hint that the 128-byte line holding p be brought into the L2: no value comes back and nothing waits for it (a
// prologue's way to start the DRAM reads of what its body will load after the wait).
__device__ __forceinline__ void prefetch_l2(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// Asks the L2 for bytes [p, p + n) of memory no launch of the step writes (the frozen weights a later launch reads; p 16-byte
// aligned), so that those reads use the DRAM bandwidth a latency-bound launch leaves idle (a router's); a launch asks it
// before its wait. A hint: no value comes back and nothing reads what it fetched. bulk 0: one prefetch.global.L2 a 128-byte
// line, the lines dealt to the grid's threads in turn (each thread's are issued and forgotten); bulk 1: bulk prefetches
// (sm_90's copy engine, cp.async.bulk.prefetch) of L2_AHEAD_CHUNK bytes, the chunks dealt to the blocks' first warps' lanes
// (the last n % 16 bytes left out).
#define L2_AHEAD_CHUNK 16384
__device__ __forceinline__ void l2_ahead(const char* p, long long n, int bulk) {
    if (p == nullptr || n <= 0) return;
    long long blocks = (long long) gridDim.x * gridDim.y;
    long long block = (long long) blockIdx.y * gridDim.x + blockIdx.x;
    if (!bulk) {
        long long threads = blocks * blockDim.x;
        for (long long l = block * blockDim.x + threadIdx.x; l < (n + 127) / 128; l += threads) prefetch_l2(p + 128 * l);
        return;
    }
    n &= ~15LL;
    if (threadIdx.x >= 32) return;
    long long chunks = (n + L2_AHEAD_CHUNK - 1) / L2_AHEAD_CHUNK;
    for (long long c = block + blocks * threadIdx.x; c < chunks; c += 32 * blocks) {
        long long off = c * L2_AHEAD_CHUNK;
        unsigned bytes = (unsigned) (n - off < L2_AHEAD_CHUNK ? n - off : L2_AHEAD_CHUNK);
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + off), "r"(bytes) : "memory");
    }
}

// Loads of frozen weights that a decode step reads once (the products' streams: q/k/v, o, the experts, the LM head).
// Built with ORBIT_L2_STREAM (KernelLibrary's orbit.cuda.l2Stream) they carry an evict-first L2 policy, so that the step's
// tens of megabytes of weights a layer pass through the L2 without pushing out what is read again (the kernels' code, the
// caches' rows, the activations, a prefetch's lines); else they are the plain loads. The same values either way. The
// policy's loads are volatile, so that they stay where the source puts them: never above a pdl_enter() they follow (a
// tensor the launch before wrote is read only after the wait, as a plain load would be).
#ifdef ORBIT_L2_STREAM
__device__ __forceinline__ unsigned long long l2_stream_policy() {
    unsigned long long p;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    return p;
}
__device__ __forceinline__ uint4 ld_stream(const uint4* a) {
    uint4 v;
    asm volatile("ld.global.nc.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(a), "l"(l2_stream_policy()));
    return v;
}
__device__ __forceinline__ u16 ld_stream(const u16* a) {
    u16 v;
    asm volatile("ld.global.nc.L2::cache_hint.u16 %0, [%1], %2;" : "=h"(v) : "l"(a), "l"(l2_stream_policy()));
    return v;
}
__device__ __forceinline__ u8 ld_stream(const u8* a) {
    u16 v;
    asm volatile("ld.global.nc.L2::cache_hint.u8 %0, [%1], %2;" : "=h"(v) : "l"(a), "l"(l2_stream_policy()));
    return (u8) v;
}
#else
__device__ __forceinline__ uint4 ld_stream(const uint4* a) { return *a; }
__device__ __forceinline__ u16 ld_stream(const u16* a) { return *a; }
__device__ __forceinline__ u8 ld_stream(const u8* a) { return *a; }
#endif

// Asynchronous copies global -> shared (sm_80+): 16 bytes, or 16 zero bytes where !valid (nothing is read then; src must
// still be a valid address); the commit of the copies issued so far as one group; the wait until at most N groups are
// in flight.
__device__ __forceinline__ void cp_async16_zfill(u32 dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}

// 4 bytes, cached at L1 as a plain load is (cp.async's .cg takes only 16).
__device__ __forceinline__ void cp_async4(u32 dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Bulk copies global -> shared through an mbarrier (sm_90's copy engine; elsewhere these compile to nothing and no kernel
// that uses them is taken): mbar_init arms a barrier that one arrival completes, mbar_init_fence makes the inits visible
// to the copy engine (then a block barrier before any thread uses them), mbar_expect_tx is that arrival, announcing the
// bytes the barrier's copies will land, bulk_load copies [src, src + bytes) to dst (both 16-byte aligned, bytes a
// multiple of 16) and counts them against bar as they land, and mbar_wait returns once the barrier's phase `parity` has
// completed: its copies landed. A frozen weight's copy carries the streams' L2 policy (ld_stream's).
__device__ __forceinline__ void mbar_init(unsigned long long* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)) : "memory");
#endif
}

__device__ __forceinline__ void mbar_init_fence() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
#endif
}

__device__ __forceinline__ void mbar_expect_tx(unsigned long long* bar, u32 bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
#endif
}

__device__ __forceinline__ void bulk_load(void* dst, const void* src, u32 bytes, unsigned long long* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#ifdef ORBIT_L2_STREAM
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;"
                 ::"r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(l2_stream_policy())
                 : "memory");
#else
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(bar))
                 : "memory");
#endif
#endif
}

__device__ __forceinline__ void mbar_wait(unsigned long long* bar, u32 parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    u32 done;
    do {
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                     : "=r"(done)
                     : "r"(smem_addr(bar)), "r"(parity)
                     : "memory");
    } while (!done);
#endif
}
