// Bandwidth-oriented fused dequantize-GEMV for few rows of x: y = x . W^T with W quantized [N, K]
// (or E experts stacked as [E * N, K]), fp32 accumulation, x f32 or bf16.
//
// Layouts (as quant.cu and the format classes): codes two 4-bit values a byte, the even element in
// the low nibble, K/2 bytes a row; one 16-byte load (uint4) of a row is exactly one 32-value group.
//   FMT_INT4  w = (u - z) * scale[n, g], scales bf16 [N, K/32]; z = 8 (zeros null) or the nibble at
//             bits 4*(n%8) of zeros[n/8, g] (compressed-tensors asym)
//   FMT_MXFP4 w = e2m1(u) * 2^(scale[n, g] - 127), scales u8 E8M0
//   FMT_NVFP4 w = e2m1(u) * e4m3(scale[n, 2g + half]) / global
//
// Work split: a block has W warps; a warp holds 32/L "sets" of L lanes (L = 8, 16 or 32, chosen by
// the host so that a row's K/32 groups spread over the set's lanes); a set computes QG_R consecutive
// output rows. Lane i of a set takes groups i, i + L, ...: per group it issues QG_R 16-byte code
// loads (one per row, coalesced over the set's lanes), loads each x row's 32 values once and uses
// them for all QG_R rows (x traffic per weight byte falls QG_R-fold), and multiplies by the group
// scale once per 8 values. Sets reduce with xor shuffles; lane 0 of a set writes.
//
// INT4 codes become floats with one byte permute: the bytes 0x4B 00 00 u are the float 2^23 + u, so
// u - z = that float - (2^23 + z), exactly. E2M1 codes: the magnitude bits placed at bits 22..24 of
// a float are e2m1(u) * 2^-126 (a subnormal for u < 2, exact), multiplied back by 2^126.
//
// Three ways to pick the rows of x (mode):
//   0 dense:   rows 0..M-1 of x and y, expert 0, processed QG_MT at a time
//   1 pairs:   blockIdx.y = p, expert ids[p], x row p / xDiv, y row p (decode: no grouping needed)
//   2 grouped: blockIdx.y = j-th active expert e = active[1 + j] (active[0] = count); its pairs
//              order[offsets[e] .. offsets[e + 1]) (from moe_route), QG_MT at a time: every
//              weight byte of an active expert is read once per call, whatever the batch.

#define QF_INT4 0
#define QF_MXFP4 1
#define QF_NVFP4 2
#define QG_R 4

__device__ __forceinline__ float qg_e4m3(u32 b) {
    u32 e = (b >> 3) & 15u;
    u32 m = b & 7u;
    float v;
    if (e == 15u && m == 7u) {
        v = __uint_as_float(0x7fc00000u);
    } else if (e == 0u) {
        v = (float) m * 0.001953125f;
    } else {
        v = __uint_as_float((e + 120u) << 23) * (1.0f + 0.125f * (float) m);
    }
    return (b & 0x80u) ? -v : v;
}

__device__ __forceinline__ float qg_e8m0(u32 e) {
    if (e == 255u) return __uint_as_float(0x7fc00000u);
    return e == 0u ? 5.877471754111438e-39f : __uint_as_float(e << 23);
}

// 8 values of one code word, in k order. zb: 2^23 + zero (INT4).
template <int FMT>
__device__ __forceinline__ void qg_decode8(u32 q, float zb, float* w) {
    if (FMT == QF_INT4) {
        u32 lo = q & 0x0F0F0F0Fu;        // bytes: elements 0, 2, 4, 6
        u32 hi = (q >> 4) & 0x0F0F0F0Fu; // bytes: elements 1, 3, 5, 7
#pragma unroll
        for (int b = 0; b < 4; b++) {
            w[2 * b] = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7440u | (u32) b)) - zb;
            w[2 * b + 1] = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7440u | (u32) b)) - zb;
        }
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            u32 t = q >> (4 * j);
            w[j] = __uint_as_float(((t << 22) & 0x01C00000u) | ((t << 28) & 0x80000000u)) * 8.507059173023462e37f; // 2^126
        }
    }
}

// 8 consecutive x values of row xr from element k (f32, or bf16 when XB).
template <bool XB>
__device__ __forceinline__ void qg_x8(const void* xr, int k, float* a) {
    if (XB) {
        uint4 u = *(const uint4*) ((const u16*) xr + k);
        u32 words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            a[2 * i] = __uint_as_float(words[i] << 16);
            a[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
        }
    } else {
        const float4* p = (const float4*) ((const float*) xr + k);
        float4 u = p[0];
        float4 v = p[1];
        a[0] = u.x; a[1] = u.y; a[2] = u.z; a[3] = u.w;
        a[4] = v.x; a[5] = v.y; a[6] = v.z; a[7] = v.w;
    }
}

template <int FMT, int MT, bool XB>
__device__ __forceinline__ void qgemv(int mode, const void* x, int xDiv, int M, const int* ids, const int* offsets, const int* order,
                      const int* active, const uint4* __restrict__ codes, const void* __restrict__ scales,
                      const u32* __restrict__ zeros, float global, float* y, int N, int K, int E, int L, int* err) {
    int G = K / 32;
    int sub = threadIdx.x & (L - 1);
    int set = ((int) blockIdx.x * (int) blockDim.x + (int) threadIdx.x) / L;
    int row0 = set * QG_R;
    if (row0 >= N) return; // whole sets leave together: the shuffles below stay within a set
    unsigned mask = L == 32 ? 0xffffffffu : ((1u << L) - 1u) << ((threadIdx.x & 31) & ~(L - 1));

    int e = 0;
    int start = 0;
    int count = M;
    const int* list = 0;
    if (mode == 1) {
        start = blockIdx.y;
        count = 1;
        e = ids[start];
        if (e < 0 || e >= E) {
            if (row0 == 0 && sub == 0) report_error(err, ERR_EXPERT_OUT_OF_RANGE, e, start);
            return;
        }
    } else if (mode == 2) {
        if ((int) blockIdx.y >= active[0]) return;
        e = active[1 + blockIdx.y];
        start = offsets[e];
        count = offsets[e + 1] - start;
        list = order;
    }
    i64 grow[QG_R]; // global weight rows (clamped inside the matrix; rows past N are computed, not written)
#pragma unroll
    for (int r = 0; r < QG_R; r++) grow[r] = (i64) e * N + (row0 + r < N ? row0 + r : N - 1);

    for (int c0 = 0; c0 < count; c0 += MT) {
        int yr[MT]; // y row (pair) of each x row of the chunk; its x row is yr / xDiv
#pragma unroll
        for (int m = 0; m < MT; m++) {
            int i = c0 + m < count ? c0 + m : count - 1;
            yr[m] = list ? list[start + i] : start + i;
        }
        float acc[QG_R][MT];
#pragma unroll
        for (int r = 0; r < QG_R; r++)
#pragma unroll
            for (int m = 0; m < MT; m++) acc[r][m] = 0.0f;

        for (int g = sub; g < G; g += L) {
            uint4 q[QG_R];
            float s0[QG_R], s1[QG_R], zb[QG_R];
#pragma unroll
            for (int r = 0; r < QG_R; r++) q[r] = codes[grow[r] * G + g];
#pragma unroll
            for (int r = 0; r < QG_R; r++) {
                if (FMT == QF_INT4) {
                    s0[r] = bf16_to_f32(((const u16*) scales)[grow[r] * G + g]);
                    s1[r] = s0[r];
                    int z = zeros == 0 ? 8 : (int) ((zeros[(grow[r] >> 3) * G + g] >> (4 * (int) (grow[r] & 7))) & 15u);
                    zb[r] = 8388608.0f + (float) z;
                } else if (FMT == QF_MXFP4) {
                    s0[r] = qg_e8m0(((const u8*) scales)[grow[r] * G + g]);
                    s1[r] = s0[r];
                    zb[r] = 0.0f;
                } else {
                    const u8* sp = (const u8*) scales + grow[r] * (2 * G) + 2 * g;
                    s0[r] = qg_e4m3(sp[0]) / global;
                    s1[r] = qg_e4m3(sp[1]) / global;
                    zb[r] = 0.0f;
                }
            }
#pragma unroll
            for (int wd = 0; wd < 4; wd++) {
                float w[QG_R][8];
#pragma unroll
                for (int r = 0; r < QG_R; r++) {
                    u32 word = wd == 0 ? q[r].x : wd == 1 ? q[r].y : wd == 2 ? q[r].z : q[r].w;
                    qg_decode8<FMT>(word, zb[r], w[r]);
                }
                int k = g * 32 + wd * 8;
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    if (c0 + m < count) {
                        float a[8];
                        qg_x8<XB>((const char*) x + (i64) (yr[m] / xDiv) * K * (XB ? 2 : 4), k, a);
#pragma unroll
                        for (int r = 0; r < QG_R; r++) {
                            float d = w[r][0] * a[0];
#pragma unroll
                            for (int i = 1; i < 8; i++) d = fmaf(w[r][i], a[i], d);
                            acc[r][m] = fmaf(d, wd < 2 ? s0[r] : s1[r], acc[r][m]);
                        }
                    }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < QG_R; r++) {
#pragma unroll
            for (int m = 0; m < MT; m++) {
                float v = acc[r][m];
                for (int o = L >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(mask, v, o);
                if (sub == 0 && row0 + r < N && c0 + m < count) y[(i64) yr[m] * N + row0 + r] = v;
            }
        }
    }
}

#define QG_KERNEL(NAME, FMT, MT, XB)                                                                                   \
    extern "C" __global__ void __launch_bounds__(128, MT == 1 ? (FMT == QF_MXFP4 ? 6 : 4) : MT == 4 ? 3 : 2) NAME(int mode, const void* x, int xDiv, int M, const int* ids, const int* offsets,      \
                                    const int* order, const int* active, const uint4* codes, const void* scales,       \
                                    const u32* zeros, float global, float* y, int N, int K, int E, int L, int* err) {  \
        qgemv<FMT, MT, XB>(mode, x, xDiv, M, ids, offsets, order, active, codes, scales, zeros, global, y, N, K, E,   \
                           L, err);                                                                                    \
    }

#define QG_FORMAT(FNAME, FMT)                          \
    QG_KERNEL(qgemv_##FNAME##_m1_f32, FMT, 1, false)   \
    QG_KERNEL(qgemv_##FNAME##_m4_f32, FMT, 4, false)   \
    QG_KERNEL(qgemv_##FNAME##_m8_f32, FMT, 8, false)   \
    QG_KERNEL(qgemv_##FNAME##_m16_f32, FMT, 16, false) \
    QG_KERNEL(qgemv_##FNAME##_m1_bf16, FMT, 1, true)   \
    QG_KERNEL(qgemv_##FNAME##_m4_bf16, FMT, 4, true)   \
    QG_KERNEL(qgemv_##FNAME##_m8_bf16, FMT, 8, true)   \
    QG_KERNEL(qgemv_##FNAME##_m16_bf16, FMT, 16, true)

QG_FORMAT(int4, QF_INT4)
QG_FORMAT(mxfp4, QF_MXFP4)
QG_FORMAT(nvfp4, QF_NVFP4)
