#include "quant_formats.cuh"

// Unscaled values of one chunk: 32 codes from 16 bytes.
template <int FMT>
__device__ __forceinline__ void decode_chunk(uint4 c, int zero, float* w) {
    u32 words[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            w[i * 8 + j] = code_value<FMT>((words[i] >> (4 * j)) & 15u, zero);
        }
    }
}

// Scales of the two 16-value halves of chunk (n, c).
template <int FMT>
__device__ __forceinline__ void chunk_scales(const void* scales, i64 n, int c, int K, float global, float& s0, float& s1) {
    if (FMT == FMT_INT4) {
        s0 = bf16_to_f32(((const u16*) scales)[n * (K / 32) + c]);
        s1 = s0;
    } else if (FMT == FMT_MXFP4) {
        s0 = e8m0(((const u8*) scales)[n * (K / 32) + c]);
        s1 = s0;
    } else {
        const u8* s = (const u8*) scales + n * (K / 16) + 2 * c;
        s0 = e4m3(s[0]) / global;
        s1 = e4m3(s[1]) / global;
    }
}

// out [N, K] = dequantized w, f32 (outBf16 = 0) or bf16 (round to nearest even). One thread per chunk.
template <int FMT>
__device__ void dequant(const uint4* codes, const void* scales, const u32* zeros, float global, void* out, int outBf16,
                        int N, int K) {
    int chunks = K / 32;
    i64 total = (i64) N * chunks;
    GRID_STRIDE(idx, total) {
        i64 n = idx / chunks;
        int c = (int) (idx % chunks);
        float w[32];
        decode_chunk<FMT>(codes[idx], FMT == FMT_INT4 ? zero_nibble(zeros, n, c, K) : 0, w);
        float s0, s1;
        chunk_scales<FMT>(scales, n, c, K, global, s0, s1);
#pragma unroll
        for (int i = 0; i < 32; i++) w[i] *= i < 16 ? s0 : s1;
        if (outBf16) {
            uint4* o = (uint4*) ((u16*) out + idx * 32);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                u32 p[4];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    p[j] = f32x2_to_bf16x2(w[i * 8 + 2 * j], w[i * 8 + 2 * j + 1]);
                }
                uint4 u;
                u.x = p[0];
                u.y = p[1];
                u.z = p[2];
                u.w = p[3];
                o[i] = u;
            }
        } else {
            float4* o = (float4*) ((float*) out + idx * 32);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float4 f;
                f.x = w[4 * i];
                f.y = w[4 * i + 1];
                f.z = w[4 * i + 2];
                f.w = w[4 * i + 3];
                o[i] = f;
            }
        }
    }
}

extern "C" __global__ void dequant_int4(const uint4* codes, const void* scales, const u32* zeros, float global, void* out,
                                      int outBf16, int N, int K) {
    ORBIT_TRACE_KERNEL();
    dequant<FMT_INT4>(codes, scales, zeros, global, out, outBf16, N, K);
}
extern "C" __global__ void dequant_mxfp4(const uint4* codes, const void* scales, const u32* zeros, float global, void* out,
                                      int outBf16, int N, int K) {
    ORBIT_TRACE_KERNEL();
    dequant<FMT_MXFP4>(codes, scales, zeros, global, out, outBf16, N, K);
}
extern "C" __global__ void dequant_nvfp4(const uint4* codes, const void* scales, const u32* zeros, float global, void* out,
                                      int outBf16, int N, int K) {
    ORBIT_TRACE_KERNEL();
    dequant<FMT_NVFP4>(codes, scales, zeros, global, out, outBf16, N, K);
}

// Four E4M3 codes (the bytes of w, lowest first) as f32, exactly: the hardware's e4m3x2 -> f16x2 conversion (sm_89+;
// every E4M3 value, NaN included, is an f16 value) and f16 -> f32; below sm_89 the decode of e4m3().
__device__ __forceinline__ float f16_bits_to_f32(u32 h) {
    float f;
    unsigned short b = (unsigned short) h;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(b));
    return f;
}

__device__ __forceinline__ void e4m3x4_to_f32(u32 w, float* out) {
#if __CUDA_ARCH__ < 890
#pragma unroll
    for (int b = 0; b < 4; b++) out[b] = e4m3((w >> (8 * b)) & 0xffu);
#else
    u32 lo;
    u32 hi;
    unsigned short a = (unsigned short) (w & 0xffffu);
    unsigned short b = (unsigned short) (w >> 16);
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(lo) : "h"(a));
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(hi) : "h"(b));
    out[0] = f16_bits_to_f32(lo & 0xffffu);
    out[1] = f16_bits_to_f32(lo >> 16);
    out[2] = f16_bits_to_f32(hi & 0xffffu);
    out[3] = f16_bits_to_f32(hi >> 16);
#endif
}

// FP8 E4M3 with one scale a 128x128 block (DeepSeek's fp8 checkpoints): w[n, k] = e4m3(codes[n, k]) * scale[n/128,
// k/128], scales f32 (scaleU8 = 0) or E8M0 bytes (scaleU8 = 1; 2^(e - 127), 255 NaN), into out [N, K] f32 or bf16
// (round to nearest even). One thread a run of 8 values of a row: K a multiple of 8, any N.
extern "C" __global__ void dequant_fp8_block(const uint2* codes, const void* scales, int scaleU8, void* out, int outBf16,
                                             int N, int K) {
    ORBIT_TRACE_KERNEL();
    i64 units = (i64) N * (K / 8);
    int kb = (K + 127) / 128;
    for (i64 u = (i64) blockIdx.x * blockDim.x + threadIdx.x; u < units; u += (i64) gridDim.x * blockDim.x) {
        i64 n = u / (K / 8);
        int k0 = (int) (u - n * (K / 8)) * 8;
        i64 si = (n / 128) * kb + k0 / 128;
        float s = scaleU8 ? e8m0(((const unsigned char*) scales)[si]) : ((const float*) scales)[si];
        uint2 c = codes[u];
        float w[8];
        e4m3x4_to_f32(c.x, w);
        e4m3x4_to_f32(c.y, w + 4);
#pragma unroll
        for (int j = 0; j < 8; j++) w[j] *= s;
        if (outBf16) {
            uint4 o;
            o.x = f32x2_to_bf16x2(w[0], w[1]);
            o.y = f32x2_to_bf16x2(w[2], w[3]);
            o.z = f32x2_to_bf16x2(w[4], w[5]);
            o.w = f32x2_to_bf16x2(w[6], w[7]);
            ((uint4*) out)[u] = o;
        } else {
            float4* o = (float4*) out + 2 * u;
            o[0] = make_float4(w[0], w[1], w[2], w[3]);
            o[1] = make_float4(w[4], w[5], w[6], w[7]);
        }
    }
}

// Several experts of one format dequantized to bf16 in one launch (the expert-chunked products):
// blockIdx.y is entry j of table [entries, 4] (u64): the addresses of one expert's codes, scales and
// zero points (0: none) and (slot << 32) | the bits of its f32 global scale. The expert's [N, K]
// goes to out + slot * N * K (out bf16 [slots, N, K]). One thread per 8-value unit (one u32 code
// word): a warp reads 128 contiguous code bytes and writes 512 contiguous output bytes, one 16-byte
// store a thread. The values are those of dequant (the same products, rounded the same way).
template <int FMT>
__device__ void dequant_experts(const unsigned long long* table, u16* out, int N, int K) {
    const unsigned long long* t = table + 4 * (i64) blockIdx.y;
    const u32* codes = (const u32*) t[0];
    const void* scales = (const void*) t[1];
    const u32* zeros = (const u32*) t[2];
    unsigned long long last = t[3];
    float global = __uint_as_float((u32) (last & 0xffffffffull));
    uint4* o = (uint4*) (out + (i64) (last >> 32) * N * K);
    int rowUnits = K / 8;
    i64 units = (i64) N * rowUnits;
    GRID_STRIDE(u, units) {
        i64 n = u / rowUnits;
        int k8 = (int) (u - n * rowUnits);   // unit within the row: values 8 * k8 .. 8 * k8 + 7
        int c = k8 >> 2;                     // 32-value chunk
        u32 q = codes[u];
        float s0, s1;
        chunk_scales<FMT>(scales, n, c, K, global, s0, s1);
        float s = (k8 & 3) < 2 ? s0 : s1;    // units 0, 1 of a chunk are its first 16 values
        int zero = FMT == FMT_INT4 ? zero_nibble(zeros, n, c, K) : 0;
        u32 p[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float a = code_value<FMT>((q >> (8 * j)) & 15u, zero) * s;
            float b = code_value<FMT>((q >> (8 * j + 4)) & 15u, zero) * s;
            p[j] = f32x2_to_bf16x2(a, b);
        }
        uint4 v;
        v.x = p[0];
        v.y = p[1];
        v.z = p[2];
        v.w = p[3];
        o[u] = v;
    }
}

extern "C" __global__ void dequant_experts_int4(const unsigned long long* table, u16* out, int N, int K) {
    ORBIT_TRACE_KERNEL();
    dequant_experts<FMT_INT4>(table, out, N, K);
}
extern "C" __global__ void dequant_experts_mxfp4(const unsigned long long* table, u16* out, int N, int K) {
    ORBIT_TRACE_KERNEL();
    dequant_experts<FMT_MXFP4>(table, out, N, K);
}
extern "C" __global__ void dequant_experts_nvfp4(const unsigned long long* table, u16* out, int N, int K) {
    ORBIT_TRACE_KERNEL();
    dequant_experts<FMT_NVFP4>(table, out, N, K);
}

// Fused dequantize-GEMV for few rows: y [M, N] = x [M, K] . w^T, M <= GEMV_MAXM, f32 accumulate.
// One warp per output column n. A lane takes 8-value units (4 code bytes, one u32; a unit lies in
// one scale group) at u = lane + 32 i: a warp reads 128 contiguous code bytes and 1 KiB of each x
// row per step, and each lane issues GEMV_UNROLL code loads before it uses any. INT4 codes become
// floats without integer conversion: the bits 0x4B000000 | u are the float 2^23 + u, so
// u - z = that float - (2^23 + z), exactly. x rows are small and stay in L1/L2. The weight is
// never written out in full precision.
#define GEMV_MAXM 8
#define GEMV_UNROLL 4

template <int FMT>
__device__ __forceinline__ void decode_unit(u32 q, int zero, float* w) {
    if (FMT == FMT_INT4) {
        float base = 8388608.0f + (float) zero;
#pragma unroll
        for (int j = 0; j < 8; j++) w[j] = __uint_as_float(0x4B000000u | ((q >> (4 * j)) & 15u)) - base;
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) w[j] = e2m1((q >> (4 * j)) & 15u);
    }
}

template <int FMT>
__device__ __forceinline__ float unit_scale(const void* scales, i64 n, int u, int K, float global) {
    if (FMT == FMT_INT4) return bf16_to_f32(((const u16*) scales)[n * (K / 32) + u / 4]);
    if (FMT == FMT_MXFP4) return e8m0(((const u8*) scales)[n * (K / 32) + u / 4]);
    return e4m3(((const u8*) scales)[n * (K / 16) + u / 2]) / global;
}

// Row n of the weight (global row index: experts stacked as [E * N, K] use e * N + n) times M rows of
// x (x row m at x + m * xStride); returns the M dot products in lane 0's acc.
template <int FMT>
__device__ __forceinline__ void gemv_row(const float* __restrict__ x, i64 xStride, const u32* __restrict__ codes,
                                         const void* __restrict__ scales, const u32* __restrict__ zeros, float global,
                                         i64 n, int M, int K, int lane, float* acc) {
    int units = K / 8;
    const u32* row = codes + n * units;
#pragma unroll
    for (int m = 0; m < GEMV_MAXM; m++) acc[m] = 0.0f;
    for (int base = 0; base < units; base += 32 * GEMV_UNROLL) {
        u32 q[GEMV_UNROLL];
        float sc[GEMV_UNROLL];
        int zp[GEMV_UNROLL];
#pragma unroll
        for (int i = 0; i < GEMV_UNROLL; i++) {
            int u = base + lane + 32 * i;
            q[i] = u < units ? row[u] : 0u;
            sc[i] = u < units ? unit_scale<FMT>(scales, n, u, K, global) : 0.0f;
            zp[i] = FMT == FMT_INT4 && u < units ? zero_nibble(zeros, n, u / 4, K) : 8;
        }
#pragma unroll
        for (int i = 0; i < GEMV_UNROLL; i++) {
            int u = base + lane + 32 * i;
            if (u < units) {
                float w[8];
                decode_unit<FMT>(q[i], zp[i], w);
#pragma unroll
                for (int m = 0; m < GEMV_MAXM; m++) {
                    if (m < M) {
                        const float4* xr = (const float4*) (x + m * xStride + (i64) u * 8);
                        float4 a = xr[0];
                        float4 b = xr[1];
                        float d = w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w
                                + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
                        acc[m] += d * sc[i];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < GEMV_MAXM; m++) {
        if (m < M) acc[m] = warp_sum(acc[m]);
    }
}

// The single-row case of matmulQuantized (decode at batch 1): a lane takes 16-value
// units (8 code bytes, one uint2) at u = lane + 32 i, so a warp reads 256 contiguous bytes per load,
// and each lane issues GEMV1_UNROLL code loads before it uses any (x, 4·K bytes, is read from L1).
#define GEMV1_UNROLL 4

template <int FMT>
__device__ __forceinline__ float unit16_scale(const void* scales, i64 n, int u, int K, float global) {
    if (FMT == FMT_INT4) return bf16_to_f32(((const u16*) scales)[n * (K / 32) + u / 2]);
    if (FMT == FMT_MXFP4) return e8m0(((const u8*) scales)[n * (K / 32) + u / 2]);
    return e4m3(((const u8*) scales)[n * (K / 16) + u]) / global;
}

template <int FMT>
__device__ __forceinline__ float gemv_row1(const float* __restrict__ x, const uint2* __restrict__ codes,
                                           const void* __restrict__ scales, const u32* __restrict__ zeros, float global,
                                           i64 n, int K, int lane) {
    int units = K / 16;
    const uint2* row = codes + n * units;
    const float4* x4 = (const float4*) x;
    float acc = 0.0f;
    for (int base = 0; base < units; base += 32 * GEMV1_UNROLL) {
        uint2 q[GEMV1_UNROLL];
        float sc[GEMV1_UNROLL];
        int zp[GEMV1_UNROLL];
#pragma unroll
        for (int i = 0; i < GEMV1_UNROLL; i++) {
            int u = base + lane + 32 * i;
            if (u < units) {
                q[i] = row[u];
                sc[i] = unit16_scale<FMT>(scales, n, u, K, global);
                zp[i] = FMT == FMT_INT4 ? zero_nibble(zeros, n, u / 2, K) : 8;
            } else {
                q[i].x = 0u;
                q[i].y = 0u;
                sc[i] = 0.0f;
                zp[i] = 8;
            }
        }
#pragma unroll
        for (int i = 0; i < GEMV1_UNROLL; i++) {
            int u = base + lane + 32 * i;
            if (u < units) {
                float w[16];
                decode_unit<FMT>(q[i].x, zp[i], w);
                decode_unit<FMT>(q[i].y, zp[i], w + 8);
                float d = 0.0f;
#pragma unroll
                for (int v = 0; v < 4; v++) {
                    float4 a = x4[(i64) u * 4 + v];
                    d += w[4 * v] * a.x + w[4 * v + 1] * a.y + w[4 * v + 2] * a.z + w[4 * v + 3] * a.w;
                }
                acc += d * sc[i];
            }
        }
    }
    return warp_sum(acc);
}

template <int FMT>
__device__ void gemv1_q(const float* x, const uint2* codes, const void* scales, const u32* zeros, float global, float* y,
                        int N, int K) {
    int n = (int) (((i64) blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    float r = gemv_row1<FMT>(x, codes, scales, zeros, global, n, K, lane);
    if (lane == 0) y[n] = r;
}

template <int FMT>
__device__ void gemv_q(const float* x, const u32* codes, const void* scales, const u32* zeros, float global, float* y,
                       int M, int N, int K) {
    int n = (int) (((i64) blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    float acc[GEMV_MAXM];
    gemv_row<FMT>(x, K, codes, scales, zeros, global, n, M, K, lane, acc);
    if (lane == 0) {
#pragma unroll
        for (int m = 0; m < GEMV_MAXM; m++) {
            if (m < M) y[(i64) m * N + n] = acc[m];
        }
    }
}

// Mixture-of-experts decode: P = tokens * topk (token, expert) pairs, blockIdx.y the pair. The experts'
// weights are stacked as one [E * N, K] matrix; pair p uses expert ids[p] (i32). x is [tokens, K]
// (xPerPair = 0: a token's experts share its row, the gate/up projections) or [P, K] (xPerPair = 1:
// the down projection). y [P, N]. One launch for every active expert of a layer.
template <int FMT>
__device__ void moe_gemv_q(const float* x, int xPerPair, int topk, const int* ids, const u32* codes, const void* scales,
                           const u32* zeros, float global, float* y, int N, int K, int E, int* err) {
    int n = (int) (((i64) blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    int p = blockIdx.y;
    if (n >= N) return;
    int e = ids[p];
    if (e < 0 || e >= E) {
        if (n == 0 && lane == 0) report_error(err, ERR_EXPERT_OUT_OF_RANGE, e, p);
        return;
    }
    const float* xr = x + (i64) (xPerPair ? p : p / topk) * K;
    float acc[GEMV_MAXM];
    gemv_row<FMT>(xr, K, codes, scales, zeros, global, (i64) e * N + n, 1, K, lane, acc);
    if (lane == 0) y[(i64) p * N + n] = acc[0];
}

#define QUANT_KERNELS(NAME, FMT)                                                                                       \
    extern "C" __global__ void gemv_##NAME(const float* x, const u32* codes, const void* scales, const u32* zeros,    \
                                           float global, float* y, int M, int N, int K) {                            \
        ORBIT_TRACE_KERNEL();                                                                                          \
        gemv_q<FMT>(x, codes, scales, zeros, global, y, M, N, K);                                                      \
    }                                                                                                                  \
    extern "C" __global__ void gemv1_##NAME(const float* x, const uint2* codes, const void* scales, const u32* zeros,  \
                                            float global, float* y, int N, int K) {                                   \
        ORBIT_TRACE_KERNEL();                                                                                          \
        gemv1_q<FMT>(x, codes, scales, zeros, global, y, N, K);                                                        \
    }                                                                                                                  \
    extern "C" __global__ void moe_gemv_##NAME(const float* x, int xPerPair, int topk, const int* ids,                \
                                               const u32* codes, const void* scales, const u32* zeros, float global,  \
                                               float* y, int N, int K, int E, int* err) {                             \
        ORBIT_TRACE_KERNEL();                                                                                          \
        moe_gemv_q<FMT>(x, xPerPair, topk, ids, codes, scales, zeros, global, y, N, K, E, err);                        \
    }

QUANT_KERNELS(int4, FMT_INT4)
QUANT_KERNELS(mxfp4, FMT_MXFP4)
QUANT_KERNELS(nvfp4, FMT_NVFP4)

#define GEMV_BF16_UNROLL 4

extern "C" __global__ void gemv_bf16(const float* __restrict__ x, const uint4* __restrict__ w, float* __restrict__ y,
                                     int M, int N, int K) {
    ORBIT_TRACE_KERNEL();
    int n = (int) (((i64) blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    if (n >= N) return;
    int units = K / 8;
    const uint4* row = w + (i64) n * units;
    float acc[GEMV_MAXM];
#pragma unroll
    for (int m = 0; m < GEMV_MAXM; m++) acc[m] = 0.0f;
    for (int base = 0; base < units; base += 32 * GEMV_BF16_UNROLL) {
        uint4 q[GEMV_BF16_UNROLL];
#pragma unroll
        for (int i = 0; i < GEMV_BF16_UNROLL; i++) {
            int u = base + lane + 32 * i;
            if (u < units) {
                q[i] = row[u];
            } else {
                q[i].x = 0u;
                q[i].y = 0u;
                q[i].z = 0u;
                q[i].w = 0u;
            }
        }
#pragma unroll
        for (int i = 0; i < GEMV_BF16_UNROLL; i++) {
            int u = base + lane + 32 * i;
            if (u < units) {
                u32 words[4] = {q[i].x, q[i].y, q[i].z, q[i].w};
                float wv[8];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    wv[2 * j] = __uint_as_float(words[j] << 16);
                    wv[2 * j + 1] = __uint_as_float(words[j] & 0xffff0000u);
                }
#pragma unroll
                for (int m = 0; m < GEMV_MAXM; m++) {
                    if (m < M) {
                        const float4* xr = (const float4*) (x + (i64) m * K + (i64) u * 8);
                        float4 a = xr[0];
                        float4 b = xr[1];
                        acc[m] += wv[0] * a.x + wv[1] * a.y + wv[2] * a.z + wv[3] * a.w
                                + wv[4] * b.x + wv[5] * b.y + wv[6] * b.z + wv[7] * b.w;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < GEMV_MAXM; m++) {
        if (m < M) {
            float s = warp_sum(acc[m]);
            if (lane == 0) y[(i64) m * N + n] = s;
        }
    }
}

// y [M, N] = x [M, K] · wᵀ for an FP8 block weight (as dequant_fp8_block) at M ≤ FP8_GEMV_MAXM rows: a warp
// cols ≤ FP8_GEMV_ROWS output columns (more: fewer reads of x; fewer: more warps for a narrow weight), each lane 16
// codes of each (one 16-byte load, inside one 128-column block) at a time against the same 16 values of every row of
// x (loaded once for the warp's columns), their products summed in f32 and multiplied by the block's scale once; K a
// multiple of 16, codes and x 16-byte aligned. A lane's weight loads (codes, scales) of two such steps are issued
// before either step is used.
// x is never rounded and the weight's values are exact; a row's value is its f32 sums in a fixed order (the lane's
// steps in order, then the warp's sum: batch-invariant).
// Grouped (a block-diagonal weight, DeepSeek V4's wo_a): output column n reads the K values of x row m from
// x + m * xStride + (n / groupRows) * K, so the groups of rows [g * groupRows, (g + 1) * groupRows) of w multiply their
// own slices of x [M, N / groupRows, K]; groupRows a multiple of cols. Ungrouped: groupRows = N, xStride = K.
#define FP8_GEMV_ROWS 4
#define FP8_GEMV_MAXM 4

extern "C" __global__ void gemv_fp8_block(const float* __restrict__ x, const uint4* __restrict__ codes,
                                          const void* __restrict__ scales, int scaleU8, float* __restrict__ y, int M,
                                          int N, int K, int cols, int groupRows, int xStride) {
    ORBIT_TRACE_KERNEL();
    int n0 = (int) (((i64) blockIdx.x * blockDim.x + threadIdx.x) >> 5) * cols;
    int lane = threadIdx.x & 31;
    if (n0 >= N) return;
    int units = K / 16;
    int kb = (K + 127) / 128;
    const float* xg = x + (i64) (n0 / groupRows) * K; // the warp's columns are in one group
    float acc[FP8_GEMV_ROWS][FP8_GEMV_MAXM];
#pragma unroll
    for (int r = 0; r < FP8_GEMV_ROWS; r++) {
#pragma unroll
        for (int m = 0; m < FP8_GEMV_MAXM; m++) acc[r][m] = 0.0f;
    }
    for (int u0 = lane; u0 < units; u0 += 64) {
        uint4 q[2][FP8_GEMV_ROWS];
        float s[2][FP8_GEMV_ROWS];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int u = u0 + 32 * h;
#pragma unroll
            for (int r = 0; r < FP8_GEMV_ROWS; r++) {
                int n = n0 + r;
                if (u < units && r < cols && n < N) {
                    q[h][r] = codes[(i64) n * units + u];
                    i64 si = (i64) (n / 128) * kb + (u >> 3);
                    s[h][r] = scaleU8 ? e8m0(((const unsigned char*) scales)[si]) : ((const float*) scales)[si];
                }
            }
        }
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int u = u0 + 32 * h;
            if (u >= units) break;
            float4 xv[FP8_GEMV_MAXM][4];
#pragma unroll
            for (int m = 0; m < FP8_GEMV_MAXM; m++) {
                if (m < M) {
                    const float4* xr = (const float4*) (xg + (i64) m * xStride + (i64) u * 16);
#pragma unroll
                    for (int j = 0; j < 4; j++) xv[m][j] = xr[j];
                }
            }
#pragma unroll
            for (int r = 0; r < FP8_GEMV_ROWS; r++) {
                if (r < cols && n0 + r < N) {
                    float wv[16];
                    e4m3x4_to_f32(q[h][r].x, wv);
                    e4m3x4_to_f32(q[h][r].y, wv + 4);
                    e4m3x4_to_f32(q[h][r].z, wv + 8);
                    e4m3x4_to_f32(q[h][r].w, wv + 12);
#pragma unroll
                    for (int m = 0; m < FP8_GEMV_MAXM; m++) {
                        if (m < M) {
                            float d = 0.0f;
#pragma unroll
                            for (int j = 0; j < 4; j++) {
                                float4 a = xv[m][j];
                                d += wv[4 * j] * a.x + wv[4 * j + 1] * a.y + wv[4 * j + 2] * a.z + wv[4 * j + 3] * a.w;
                            }
                            acc[r][m] += d * s[h][r];
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < FP8_GEMV_ROWS; r++) {
#pragma unroll
        for (int m = 0; m < FP8_GEMV_MAXM; m++) {
            if (m < M && r < cols && n0 + r < N) {
                float v = warp_sum(acc[r][m]);
                if (lane == 0) y[(i64) m * N + n0 + r] = v;
            }
        }
    }
}
