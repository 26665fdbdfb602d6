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

// Programmatic dependent launch (sm_90+). A kernel launched with programmatic stream serialization
// may start while the kernel before it on the stream still runs: griddepcontrol.wait blocks until that
// kernel has completed and its memory is visible, then launch_dependents lets the next such kernel
// start its blocks. Without the launch attribute both are no-ops. A kernel the host launches this way
// calls pdl_enter() as its first statement, before any read or write of global memory.
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;");
#endif
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
