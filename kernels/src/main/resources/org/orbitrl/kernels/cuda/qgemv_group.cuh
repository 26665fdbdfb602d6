// The quantized formats' 32-value groups as the GEMV kernels read them (qgemv.cu, moe_decode.cu):
// the decode of a code word, the scale factors and zero of a group, and the loads and products of a
// lane's groups (qg_fetch, qg_apply). Layouts: see qgemv.cu.

#define QF_INT4 0
#define QF_MXFP4 1
#define QF_NVFP4 2

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


// The scale factors and zero of one 32-value group (s0: values 0..15, s1: values 16..31).
template <int FMT>
__device__ __forceinline__ void qg_scales(const void* __restrict__ scales, const u32* __restrict__ zeros, float global, i64 row,
                                          int G, int g, float& s0, float& s1, float& zb) {
    if (FMT == QF_INT4) {
        s0 = bf16_to_f32(ld_stream((const u16*) scales + row * G + g));
        s1 = s0;
        int z = zeros == 0 ? 8 : (int) ((zeros[(row >> 3) * G + g] >> (4 * (int) (row & 7))) & 15u);
        zb = 8388608.0f + (float) z;
    } else if (FMT == QF_MXFP4) {
        s0 = qg_e8m0(ld_stream((const u8*) scales + row * G + g));
        s1 = s0;
        zb = 0.0f;
    } else {
        const u8* sp = (const u8*) scales + row * (2 * G) + 2 * g;
        s0 = qg_e4m3(ld_stream(sp)) / global;
        s1 = qg_e4m3(ld_stream(sp + 1)) / global;
        zb = 0.0f;
    }
}

// qg_scales in two halves, for a kernel that issues the loads and decodes them after something else waits: the
// words as loaded (qg_scales_load: sr the scale bits, zr INT4's word of its own zero table) and their values
// (qg_scales_of), qg_scales' expressions. Beside qg_scales rather than under it: qg_scales written through them is the
// same values in other machine code (nvcc 13.0, sm_90) for the INT4 and NVFP4 kernels, whose timings stand for theirs.
template <int FMT>
__device__ __forceinline__ void qg_scales_load(const void* __restrict__ scales, const u32* __restrict__ zeros, i64 row, int G,
                                               int g, u32& sr, u32& zr) {
    zr = 0u;
    if (FMT == QF_INT4) {
        sr = ld_stream((const u16*) scales + row * G + g);
        if (zeros != 0) zr = zeros[(row >> 3) * G + g];
    } else if (FMT == QF_MXFP4) {
        sr = ld_stream((const u8*) scales + row * G + g);
    } else {
        const u8* sp = (const u8*) scales + row * (2 * G) + 2 * g;
        sr = (u32) ld_stream(sp) | ((u32) ld_stream(sp + 1) << 8);
    }
}

template <int FMT>
__device__ __forceinline__ void qg_scales_of(u32 sr, u32 zr, const u32* zeros, float global, i64 row, float& s0, float& s1,
                                             float& zb) {
    if (FMT == QF_INT4) {
        s0 = bf16_to_f32((u16) sr);
        s1 = s0;
        int z = zeros == 0 ? 8 : (int) ((zr >> (4 * (int) (row & 7))) & 15u);
        zb = 8388608.0f + (float) z;
    } else if (FMT == QF_MXFP4) {
        s0 = qg_e8m0(sr);
        s1 = s0;
        zb = 0.0f;
    } else {
        s0 = qg_e4m3(sr & 0xffu) / global;
        s1 = qg_e4m3(sr >> 8) / global;
        zb = 0.0f;
    }
}

// acc[r][m] += the group g of rows r (codes q[r], scales s0/s1, zero zb) times x rows xr[m].
template <int FMT, int MT, bool XB, int R>
__device__ __forceinline__ void qg_group(const uint4* q, const float* s0, const float* s1, const float* zb, const char* const* xr,
                                         int mcount, int K, int g, float (*acc)[MT]) {
#pragma unroll
    for (int wd = 0; wd < 4; wd++) {
        float w[R][8];
#pragma unroll
        for (int r = 0; r < R; r++) {
            u32 word = wd == 0 ? q[r].x : wd == 1 ? q[r].y : wd == 2 ? q[r].z : q[r].w;
            qg_decode8<FMT>(word, zb[r], w[r]);
        }
        int k = g * 32 + wd * 8;
#pragma unroll
        for (int m = 0; m < MT; m++) {
            if (m < mcount) {
                float a[8];
                qg_x8<XB>(xr[m], k, a);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    float d = w[r][0] * a[0];
#pragma unroll
                    for (int i = 1; i < 8; i++) d = fmaf(w[r][i], a[i], d);
                    acc[r][m] = fmaf(d, wd < 2 ? s0[r] : s1[r], acc[r][m]);
                }
            }
        }
    }
}

// The loads of U steps g, g + S, .. (those below G; step 0 always) of R rows: codes, scale factors and zeros.
template <int FMT, int R, int U>
__device__ __forceinline__ void qg_fetch(const uint4* __restrict__ codes, const void* __restrict__ scales, const u32* __restrict__ zeros,
                                         float global, const i64* grow, int G, int g, int S, uint4 (*q)[R], float (*s0)[R],
                                         float (*s1)[R], float (*zb)[R]) {
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int r = 0; r < R; r++)
            if (u == 0 || g + u * S < G) q[u][r] = ld_stream(codes + grow[r] * G + g + u * S);
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int r = 0; r < R; r++)
            if (u == 0 || g + u * S < G) qg_scales<FMT>(scales, zeros, global, grow[r], G, g + u * S, s0[u][r], s1[u][r], zb[u][r]);
}

// qg_fetch of one step (g) with the scale and zero words left as loaded (qg_scales_load): nothing waits for a load.
template <int FMT, int R>
__device__ __forceinline__ void qg_fetch_words(const uint4* __restrict__ codes, const void* __restrict__ scales,
                                               const u32* __restrict__ zeros, const i64* grow, int G, int g, uint4* q, u32* sr,
                                               u32* zr) {
#pragma unroll
    for (int r = 0; r < R; r++) q[r] = ld_stream(codes + grow[r] * G + g);
#pragma unroll
    for (int r = 0; r < R; r++) qg_scales_load<FMT>(scales, zeros, grow[r], G, g, sr[r], zr[r]);
}

// The products of the steps qg_fetch loaded, times the mcount rows xr of x, into acc.
template <int FMT, int MT, bool XB, int R, int U>
__device__ __forceinline__ void qg_apply(uint4 (*q)[R], float (*s0)[R], float (*s1)[R], float (*zb)[R], int G, int g, int S,
                                         const char* const* xr, int mcount, int K, float (*acc)[MT]) {
#pragma unroll
    for (int u = 0; u < U; u++)
        if (u == 0 || g + u * S < G) qg_group<FMT, MT, XB, R>(q[u], s0[u], s1[u], zb[u], xr, mcount, K, g + u * S, acc);
}

// The gate and up products of a lane's R rows (as qgemv_swiglu and moe_decode compute them): from the
// step g whose loads qg_fetch has issued into (qg, gs0, ..) and (qu, us0, ..), each step's products
// over x (xr) into ag and au, then the next step's loads.
template <int FMT, int R>
__device__ __forceinline__ void qg_gate_up_steps(const uint4* __restrict__ gc, const void* __restrict__ gs, const u32* __restrict__ gz,
                                                 float gglobal, const uint4* __restrict__ uc, const void* __restrict__ us,
                                                 const u32* __restrict__ uz, float uglobal, const i64* grow, int G, int g, int S,
                                                 const char* const* xr, int K, uint4 (*qg)[R], float (*gs0)[R], float (*gs1)[R],
                                                 float (*gzb)[R], uint4 (*qu)[R], float (*us0)[R], float (*us1)[R],
                                                 float (*uzb)[R], float (*ag)[1], float (*au)[1]) {
    while (g < G) {
        qg_apply<FMT, 1, false, R, 1>(qg, gs0, gs1, gzb, G, g, S, xr, 1, K, ag);
        qg_apply<FMT, 1, false, R, 1>(qu, us0, us1, uzb, G, g, S, xr, 1, K, au);
        g += S;
        if (g < G) {
            qg_fetch<FMT, R, 1>(gc, gs, gz, gglobal, grow, G, g, S, qg, gs0, gs1, gzb);
            qg_fetch<FMT, R, 1>(uc, us, uz, uglobal, grow, G, g, S, qu, us0, us1, uzb);
        }
    }
}

// A lane's gate and up sums of its R rows (ag, au of row lane rl, k lane kq) summed over the k lanes
// with shuffles and stored for the block in red [gate | up][warp][row]; the caller's barrier then makes
// them visible to the threads that sum over the warps.
template <int RL, int R, int WMAX>
__device__ __forceinline__ void qg_gate_up_to_shared(float (*ag)[1], float (*au)[1], float (*red)[WMAX][RL * R], int warp, int rl,
                                                     int kq) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        float vg = ag[r][0];
        float vu = au[r][0];
#pragma unroll
        for (int o = RL; o < 32; o <<= 1) {
            vg += __shfl_xor_sync(0xffffffffu, vg, o);
            vu += __shfl_xor_sync(0xffffffffu, vu, o);
        }
        if (kq == 0) {
            red[0][warp][rl + RL * r] = vg;
            red[1][warp][rl + RL * r] = vu;
        }
    }
}
