// Tensor-core grouped expert products for decode batches: y[p] = x[p / xDiv] . W_e^T for every pair p
// routed to expert e (moe_route's offsets / order / active), W INT4 group-32 stacked [E * N, K] in
// qgemv.cu's layout (codes two to a byte, the even element in the low nibble, K/2 bytes a row; scales
// bf16 [E * N, K/32]; zero 8, or the nibble at bits 4*(r%8) of zeros[r/8, g]), mma.sync m16n8k16 bf16
// with f32 accumulation, y f32.
//
// Operands: the weights are the A operand (a warp owns 16 output rows of one expert), the expert's x
// rows the B operand (n-tiles of 8 rows, MT/8 of them per chunk). Weight values u - z are small
// integers, exact in bf16; the scale is applied per 32-value group to the f32 partial product of that
// group (two mma of k16 each), so the weights are exact and x (rounded to bf16 when f32) is the only
// rounded operand.
//
// k order: the mma's 16 k slots are a permutation of physical k, the same for A and B. In group gi,
// lane (g, t) (g = lane / 4, t = lane % 4) holds the 32-bit word t of rows g and g + 8 (ldmatrix:
// values 8t .. 8t + 7 of the group, nibble j = value 8t + j). The decode takes the nibble pairs
// (j, j + 4) into one bf16x2 register: R0 = (v0, v4), R1 = (v1, v5), R2 = (v2, v6), R3 = (v3, v7). The
// first mma of the group takes A = {R0(g), R0(g+8), R1(g), R1(g+8)}, the second {R2.., R3..}; the x
// values are staged in shared memory with every 8-value chunk stored as (x0, x4), (x1, x5), (x2, x6),
// (x3, x7), so one 16-byte load of chunk t of the group gives the B registers of both mma.
//
// Work split: block (blockIdx.x, blockIdx.y) = rows [128 * blockIdx.x, +128) of the blockIdx.y-th active
// expert, QM_WARPS warps of 16 rows each, over the whole of K. The block stages its expert's x rows
// (MT at a time, bf16, in the order above, row stride xStride = 2K + 64 bytes: conflict-free loads)
// in dynamic shared memory (after the warps' weight stages); each warp streams its 16 weight rows
// through a private ST-deep cp.async pipeline (ST = QM_STAGES, or 2 or 3 for more blocks an SM; QM_SG
// groups a stage, 16-byte copies; scales 4-byte copies) and reads them with ldmatrix, so every weight
// byte of an active expert is read from memory once per chunk of MT rows (once, when the expert has at
// most MT rows).
//
// INT4 decode: (w >> 4j) & 0x000F000F | 0x43004300 is the bf16 pair 128 + u; fma(., 1, -(128 + z)) is
// u - z exactly.
//
// MXFP4 experts (FP4 true; qgemv.cu's layout: the same codes, E2M1 values, E8M0 scales u8 [E * N, K/32]): twice an
// E2M1 magnitude is a small integer (0, 1, 2, 3, 4, 6, 8, 12), looked up by one byte permute from the 8-byte table of
// them and made a bf16 pair by the INT4 decode's magic number; the sign bits are flipped in after. Each group's scale
// is 2^(e - 127) / 2, applied to the f32 partial product of its 32 values as the INT4 scale is: the weights exact
// again, x the only rounded operand. A stage holds the scales as [16 rows, 8 groups] bytes.

#define QM_WARPS 8
#define QM_STAGES 4
#define QM_SG 8                                   // groups of 32 k a stage
#define QM_ROWB 144                               // bytes of a weight row in a stage: 8 x 16 + 16 (conflict-free ldmatrix)
#define QM_WBYTES (16 * QM_ROWB)                  // codes of a stage: [16 rows, QM_ROWB]
#define QM_STAGE (QM_WBYTES + 16 * 16)            // + scales: [16 rows, 8 groups] bf16
#define QM_XB 4                                   // x chunks a thread loads before it stores any

__device__ __forceinline__ void qm_cp16(u32 dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void qm_cp4(u32 dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ u32 qm_fma_bf16x2(u32 a, u32 b, u32 c) {
    u32 d;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// (a & 0x000F000F) | 0x43004300 in one instruction: the bf16 pair 128 + u of the nibbles at bits 0 and 16 of a.
__device__ __forceinline__ u32 qm_magic(u32 a) {
    u32 d;
    asm("lop3.b32 %0, %1, 0x000F000F, 0x43004300, 0xEA;\n" : "=r"(d) : "r"(a));
    return d;
}

// The 8 INT4 values of word w as u - z in bf16 pairs: r[j] = (v_j, v_{j+4}); zc = -(128 + z) in both halves.
__device__ __forceinline__ void qm_decode(u32 w, u32 zc, u32* r) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        r[j] = qm_fma_bf16x2(qm_magic(w >> (4 * j)), 0x3F803F80u, zc);
    }
}

// The 8 E2M1 values of word w as twice their values in bf16 pairs: r[j] = (2 v_j, 2 v_{j+4}). The magnitude codes of
// nibbles j and j + 4 (bits 4j .. 4j + 2 and 4j + 16 .. 4j + 18) become the selectors of bytes 0 and 2 of a permute of
// the table (0, 1, 2, 3, 4, 6, 8, 12); selectors 1 and 3 stay 0, which picks the table's 0. Bits 4j + 3 and 4j + 19,
// the signs, go to bits 15 and 31.
__device__ __forceinline__ void qm_decode_fp4(u32 w, u32* r) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        u32 t = w >> (4 * j);
        u32 sel = __byte_perm(t, 0u, 0x4420u) & 0x0707u;     // (code j, 0, code j + 4, 0) as selector nibbles
        u32 m = __byte_perm(0x03020100u, 0x0C080604u, sel);  // (2|v_j|, 0, 2|v_{j+4}|, 0) as bytes
        u32 v = qm_fma_bf16x2(m | 0x43004300u, 0x3F803F80u, 0xC300C300u);
        r[j] = v ^ ((t << 12) & 0x80008000u);
    }
}

// Half the E8M0 scale 2^(e - 127) (the decoded values are twice the weights'); 255 is NaN.
__device__ __forceinline__ float qm_e8m0_half(u32 e) {
    if (e == 255u) return __uint_as_float(0x7fc00000u);
    return (e == 0u ? 5.877471754111438e-39f : __uint_as_float(e << 23)) * 0.5f;
}

// -(128 + z) as a bf16 pair for zero point z (z = 8 without zeros: symmetric).
__device__ __forceinline__ u32 qm_zc(u32 z) {
    return (0xC300u | z) * 0x00010001u;
}

// The zero points of groups gi0 and gi0 + 1 (gi0 even) of the row whose word row is zrow and nibble shift zsh, as
// -(128 + z) bf16 pairs.
__device__ __forceinline__ uint2 qm_zero2(const u32* __restrict__ zrow, int zsh, int gi0) {
    uint2 w = *(const uint2*) (zrow + gi0);
    return make_uint2(qm_zc((w.x >> zsh) & 15u), qm_zc((w.y >> zsh) & 15u));
}

// The products of one weight stage (QM_SG groups: gs = its first group) into acc. FULL: every group of the stage
// is inside K; ZP: the zero points come from zeros (zrow / zsh of rows g and g + 8), else 8. ldmatrix gives this
// lane's words of rows g and g + 8 of two groups; the stage's scales [16 rows, QM_SG] bf16 are read two groups at a
// time (one 32-bit load a row). Every n-tile below nt holds x rows (nt >= 1), so tile 0 needs no check.
template <int NT, bool FULL, bool ZP, bool FP4 = false>
__device__ __forceinline__ void qm_stage(float (&acc)[NT][4], u32 wbase, const u16* sc, const u8* xrow, int xStride, int gs,
                                         int G, int nt, int g, const u32* zLoRow, const u32* zHiRow, int zshLo, int zshHi) {
#pragma unroll 2 // fully unrolled, the products of a stage spill at the 128 registers of two blocks an SM
    for (int jp = 0; jp < QM_SG / 2; jp++) {
        int gi0 = gs + 2 * jp;
        if (FULL || gi0 < G) { // G is even: both groups of the pair are inside K
            u32 w[4]; // rows g, g + 8 of group gi0, then of gi0 + 1
            ldsm_x4(wbase + (u32) (2 * jp * 16), w);
            u32 sl = 0, sh = 0;
            if (FP4) { // E8M0 bytes of groups gi0, gi0 + 1, rows g and g + 8
                sl = *(const u16*) ((const u8*) sc + g * 8 + 2 * jp);
                sh = *(const u16*) ((const u8*) sc + (g + 8) * 8 + 2 * jp);
            } else {
                sl = *(const u32*) (sc + g * 8 + 2 * jp);       // bf16 scales of groups gi0, gi0 + 1, row g
                sh = *(const u32*) (sc + (g + 8) * 8 + 2 * jp); // and row g + 8
            }
            uint2 zl = make_uint2(0xC308C308u, 0xC308C308u);
            uint2 zh = zl;
            if (ZP) {
                zl = qm_zero2(zLoRow, zshLo, gi0);
                zh = qm_zero2(zHiRow, zshHi, gi0);
            }
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float sLo, sHi;
                u32 a[4];
                u32 b[4];
                if (FP4) {
                    sLo = qm_e8m0_half(h == 0 ? sl & 0xFFu : sl >> 8);
                    sHi = qm_e8m0_half(h == 0 ? sh & 0xFFu : sh >> 8);
                    qm_decode_fp4(w[2 * h], a);
                    qm_decode_fp4(w[2 * h + 1], b);
                } else {
                    sLo = __uint_as_float(h == 0 ? sl << 16 : sl & 0xFFFF0000u);
                    sHi = __uint_as_float(h == 0 ? sh << 16 : sh & 0xFFFF0000u);
                    qm_decode(w[2 * h], h == 0 ? zl.x : zl.y, a);
                    qm_decode(w[2 * h + 1], h == 0 ? zh.x : zh.y, b);
                }
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    if (j == 0 || j < nt) {
                        uint4 xv = *(const uint4*) (xrow + 8 * j * xStride + (gi0 + h) * 64);
                        float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                        mma_bf16_16816(c, a[0], b[0], a[1], b[1], xv.x, xv.y);
                        mma_bf16_16816(c, a[2], b[2], a[3], b[3], xv.z, xv.w);
                        acc[j][0] = fmaf(sLo, c[0], acc[j][0]);
                        acc[j][1] = fmaf(sLo, c[1], acc[j][1]);
                        acc[j][2] = fmaf(sHi, c[2], acc[j][2]);
                        acc[j][3] = fmaf(sHi, c[3], acc[j][3]);
                    }
                }
            }
        }
    }
}

// 8 x values of row xr from element k as bf16 in the order (x0, x4), (x1, x5), (x2, x6), (x3, x7).
template <bool XB>
__device__ __forceinline__ uint4 qm_x8(const void* xr, int k) {
    uint4 o;
    if (XB) {
        uint4 u = *(const uint4*) ((const u16*) xr + k);
        o.x = __byte_perm(u.x, u.z, 0x5410);
        o.y = __byte_perm(u.x, u.z, 0x7632);
        o.z = __byte_perm(u.y, u.w, 0x5410);
        o.w = __byte_perm(u.y, u.w, 0x7632);
    } else {
        const float4* p = (const float4*) ((const float*) xr + k);
        float4 a = p[0];
        float4 b = p[1];
        o.x = f32x2_to_bf16x2(a.x, b.x);
        o.y = f32x2_to_bf16x2(a.y, b.y);
        o.z = f32x2_to_bf16x2(a.z, b.z);
        o.w = f32x2_to_bf16x2(a.w, b.w);
    }
    return o;
}

// A LoRA term of a fused launch's matrix (QmLora): out[p, n] += s * (lo[p] . B_e[n]), lo f32 [pairs, R] (the pair's
// products with the LoRA's A), B_e = table[e] f32 [N, R] (R % 4 == 0, rows 16-byte aligned), lo null: none.
struct QmLora {
    const float* lo;
    const unsigned long long* table;
    float s;
};

// acc[h] += s (lr . bLo), acc[2 + h] += s (lr . bHi): the R-long sums of a LoRA term in order, in f32 (lr a pair's
// lo row, bLo / bHi the B rows of the lane's output rows g and g + 8).
__device__ __forceinline__ void qm_lora_dot(float (&acc)[4], int h, float s, const float4* lr, const float4* bLo,
                                            const float4* bHi, int R) {
    float sLo = 0.0f;
    float sHi = 0.0f;
#pragma unroll 4
    for (int q = 0; q < (R >> 2); q++) {
        float4 v = lr[q];
        float4 a = bLo[q];
        float4 b = bHi[q];
        sLo = fmaf(a.x, v.x, sLo); sLo = fmaf(a.y, v.y, sLo); sLo = fmaf(a.z, v.z, sLo); sLo = fmaf(a.w, v.w, sLo);
        sHi = fmaf(b.x, v.x, sHi); sHi = fmaf(b.y, v.y, sHi); sHi = fmaf(b.z, v.z, sHi); sHi = fmaf(b.w, v.w, sHi);
    }
    acc[h] = acc[h] + s * sLo;
    acc[2 + h] = acc[2 + h] + s * sHi;
}

// The LoRA terms of a warp's products: acc[j] gets pair m = 8j + 2t + h's (lo row loRow(m), a row past the chunk's
// mcount reads pair 0's: its outputs are never written) against the B rows bLo and bHi, for the n-tiles below nt.
template <int NT, typename LoRow>
__device__ __forceinline__ void qm_lora_terms(float (&acc)[NT][4], float s, LoRow loRow, const float4* bLo, const float4* bHi,
                                              int mcount, int nt, int t, int R) {
#pragma unroll
    for (int j = 0; j < NT; j++) {
        if (j < nt) {
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int m = 8 * j + 2 * t + h;
                qm_lora_dot(acc[j], h, s, loRow(m < mcount ? m : 0), bLo, bHi, R);
            }
        }
    }
}

// A warp's LoRA term from its drained weight stages: one round of 16-byte copies stages the B rows of its 16 output
// rows ([16, rs] f32, rows past N repeat row N - 1) and the lo rows of the chunk's mcount pairs ([MT, rs] after them),
// then every lane sums as qm_lora_dot does from global memory (the same order: the same bits), one round trip to
// memory instead of one per few pieces. pairs: the chunk's pair ids. The caller checked (16 + MT) * rs floats fit.
template <int NT, int MT>
__device__ __forceinline__ void qm_lora_staged(float (&acc)[NT][4], QmLora l, const float* bw, float* ring, int rs, int n0,
                                               int N, int R, const int* pairs, int mcount, int nt, int g, int t, int lane) {
    float* bt = ring;
    float* lt = ring + 16 * rs;
    int q4 = R >> 2; // 16-byte pieces of a row
    u32 bts = smem_addr(bt);
    u32 lts = smem_addr(lt);
    for (int i = lane; i < 16 * q4; i += 32) {
        int r = i / q4;
        int q = i - r * q4;
        int row = n0 + r < N ? n0 + r : N - 1;
        qm_cp16(bts + (u32) ((r * rs + 4 * q) * 4), bw + (i64) row * R + 4 * q);
    }
    for (int i = lane; i < mcount * q4; i += 32) {
        int m = i / q4;
        int q = i - m * q4;
        qm_cp16(lts + (u32) ((m * rs + 4 * q) * 4), l.lo + (i64) pairs[m] * R + 4 * q);
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncwarp();
    qm_lora_terms(acc, l.s, [&](int m) { return (const float4*) (lt + m * rs); }, (const float4*) (bt + g * rs),
                  (const float4*) (bt + (g + 8) * rs), mcount, nt, t, R);
    __syncwarp(); // every lane has read the tiles before the stages are written again (the hand-over, the next chunk)
}

// ST weight stages a warp; AFTER: a stage is refilled after its products (ST stages in flight while the
// warp waits), else before them (ST - 1 in flight, the slot of the previous stage). FUSED: warps 0-3
// multiply the first matrix (gate), warps 4-7 the second (up), rows [64 * blockIdx.x, +64) of both;
// the second's warps hand their products to their partner through their own (drained) stages and the
// block writes silu(gate) * up. OUTB: y bf16 (round to nearest even), else f32. LORA: each warp adds its
// matrix's LoRA term (lora0 the first's, lora1 the second's, R their rank) to its products (before the
// SwiGLU when FUSED), summed over k in order in f32 (lo and the rows of B read from global memory).
template <int MT, bool XB, int ST, bool AFTER, bool FUSED, bool OUTB, bool LORA = false, bool FP4 = false>
__device__ __forceinline__ void qmma_grouped(const void* x, int xDiv, const int* offsets, const int* order, const int* active,
                                             const u8* codes0, const u16* scales0, const u32* zeros0, const u8* codes1,
                                             const u16* scales1, const u32* zeros1, void* y, int N, int K, int xStride,
                                             QmLora lora0 = QmLora{0, 0, 0.0f}, QmLora lora1 = QmLora{0, 0, 0.0f}, int R = 0) {
    constexpr int NT = MT / 8;                                 // n-tiles of 8 x rows
    constexpr int HALF = QM_WARPS / 2;
    constexpr int ROWS = FUSED ? 16 * HALF : 16 * QM_WARPS;    // output rows of a block (of each matrix)
    extern __shared__ __align__(16) u8 qm_shared[];
    u8* wst = qm_shared + (threadIdx.x >> 5) * (ST * QM_STAGE); // this warp's [ST][QM_STAGE] weight stages
    u8* xs = qm_shared + QM_WARPS * ST * QM_STAGE;             // [MT, xStride]: x rows of the chunk, bf16, permuted

    if ((int) blockIdx.y >= active[0]) return; // the whole block leaves
    int e = active[1 + blockIdx.y];
    int start = offsets[e];
    int count = offsets[e + 1] - start;
    int G = K >> 5;
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int g = lane >> 2;
    int t = lane & 3;
    bool second = FUSED && warp >= HALF; // warp-uniform
    const u8* codes = second ? codes1 : codes0;
    const u16* scales = second ? scales1 : scales0;
    const u32* zeros = second ? zeros1 : zeros0;
    int n0 = blockIdx.x * ROWS + (FUSED ? (warp & (HALF - 1)) : warp) * 16;
    bool rowsHere = n0 < N; // warp-uniform, the same for FUSED partners
    int nst = (G + QM_SG - 1) / QM_SG;
    u32 wsm = smem_addr(wst);
    i64 ebase = (i64) e * N;

    // This lane's copies of a stage: codes rows 4 * it + lane / 8 (it < 4), group lane % 8 of the stage;
    // scales rows 8 * it + lane / 4 (it < 2), groups 2 * (lane % 4) and the next. Rows past N read row N - 1;
    // the offsets are from row n0 (bytes of codes, elements of scales).
    int nLast = N - 1 - n0;
    const u8* cbase = codes + (ebase + n0) * (i64) (K >> 1) + (lane & 7) * 16;
    const u16* sbase = scales + (ebase + n0) * (i64) G + 2 * (lane & 3);
    const u8* sbase8 = (const u8*) scales + (ebase + n0) * (i64) G + 4 * (lane & 1); // FP4: rows lane / 2, groups 4 (lane % 2) ..
    int soff8 = ((lane >> 1) < nLast ? (lane >> 1) : nLast) * G;
    int coff[4];
#pragma unroll
    for (int it = 0; it < 4; it++) {
        int r = 4 * it + (lane >> 3);
        coff[it] = (r < nLast ? r : nLast) * (K >> 1);
    }
    int soff[2];
#pragma unroll
    for (int it = 0; it < 2; it++) {
        int r = 8 * it + (lane >> 2);
        soff[it] = (r < nLast ? r : nLast) * G;
    }
    // global rows of this lane's A fragment (rows g and g + 8 of the warp's tile), clamped into the expert
    i64 growLo = ebase + (n0 + g < N ? n0 + g : N - 1);
    i64 growHi = ebase + (n0 + g + 8 < N ? n0 + g + 8 : N - 1);
    // their zero points: word row grow / 8 of zeros [E * N / 8, G], nibble grow % 8
    const u32* zLoRow = zeros == 0 ? zeros : zeros + (growLo >> 3) * G;
    const u32* zHiRow = zeros == 0 ? zeros : zeros + (growHi >> 3) * G;
    int zshLo = 4 * (int) (growLo & 7);
    int zshHi = 4 * (int) (growHi & 7);

    auto loadStage = [&](int s) {
        u32 base = wsm + (u32) ((s % ST) * QM_STAGE);
        int gs = s * QM_SG;
        if (gs + (lane & 7) < G) {
#pragma unroll
            for (int it = 0; it < 4; it++) {
                qm_cp16(base + (u32) ((4 * it + (lane >> 3)) * QM_ROWB + (lane & 7) * 16), cbase + coff[it] + gs * 16);
            }
        }
        if (FP4) {
            if (gs + 4 * (lane & 1) < G) qm_cp4(base + (u32) (QM_WBYTES + (lane >> 1) * 8 + (lane & 1) * 4), sbase8 + soff8 + gs);
        } else if (gs + 2 * (lane & 3) < G) {
#pragma unroll
            for (int it = 0; it < 2; it++) {
                qm_cp4(base + (u32) (QM_WBYTES + (8 * it + (lane >> 2)) * 16 + (lane & 3) * 4), sbase + soff[it] + gs);
            }
        }
    };
    auto store = [&](i64 idx, float v) {
        if (OUTB) {
            ((u16*) y)[idx] = f32_to_bf16_bits(v);
        } else {
            ((float*) y)[idx] = v;
        }
    };

    constexpr int LEAD = AFTER ? ST : ST - 1; // stages in flight ahead of the one being multiplied
    int chunks = K >> 3;                      // 8-value chunks of an x row
    for (int c0 = 0; c0 < count; c0 += MT) {
        int mcount = count - c0 < MT ? count - c0 : MT;
        if (rowsHere) { // the first stages of the weights fly while x is staged
#pragma unroll
            for (int s = 0; s < LEAD; s++) {
                if (s < nst) loadStage(s);
                cp_async_commit();
            }
        }
        __syncthreads(); // the previous chunk's readers of xs are done
        // rows mcount .. 8 * nt - 1 of the last n-tile stay as they are: they only reach output columns never written
        int total = mcount * chunks;
        for (int i0 = threadIdx.x; i0 < total; i0 += QM_XB * blockDim.x) { // QM_XB items' loads in flight at once
            uint4 v[QM_XB];
            int at[QM_XB];
#pragma unroll
            for (int u = 0; u < QM_XB; u++) {
                int i = i0 + u * blockDim.x;
                at[u] = -1;
                if (i < total) {
                    int m = i / chunks;
                    int c = i - m * chunks;
                    int p = order[start + c0 + m];
                    v[u] = qm_x8<XB>((const char*) x + (i64) (p / xDiv) * K * (XB ? 2 : 4), 8 * c);
                    at[u] = m * xStride + c * 16;
                }
            }
#pragma unroll
            for (int u = 0; u < QM_XB; u++) {
                if (at[u] >= 0) *(uint4*) (xs + at[u]) = v[u];
            }
        }
        __syncthreads();
        int nt = (mcount + 7) >> 3; // n-tiles holding rows
        float acc[NT][4];
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[j][q] = 0.0f;
        if (rowsHere) {
            // ldmatrix: lanes 8i .. 8i + 7 address matrix i = rows (lane % 8) + 8 (i % 2) of group 2 jp + i / 2
            u32 lrow = (u32) (((lane & 7) + ((lane >> 3) & 1) * 8) * QM_ROWB + (lane >> 4) * 16);
            const u8* xrow = xs + g * xStride + t * 16; // this lane's B chunk: x row g of an n-tile, chunk t of a group
            for (int s = 0; s < nst; s++) {
                cp_async_wait<LEAD - 1>(); // stage s has landed
                __syncwarp();
                if (!AFTER) { // refill the slot of stage s - 1, read by every lane before the barrier above
                    if (s + LEAD < nst) loadStage(s + LEAD);
                    cp_async_commit();
                }
                u32 wbase = wsm + (u32) ((s % ST) * QM_STAGE) + lrow;
                const u16* sc = (const u16*) (wst + (s % ST) * QM_STAGE + QM_WBYTES);
                int gs = s * QM_SG;
                bool full = gs + QM_SG <= G;
                if (FP4) {
                    if (full) {
                        qm_stage<NT, true, false, true>(acc, wbase, sc, xrow, xStride, gs, G, nt, g, 0, 0, 0, 0);
                    } else {
                        qm_stage<NT, false, false, true>(acc, wbase, sc, xrow, xStride, gs, G, nt, g, 0, 0, 0, 0);
                    }
                } else if (zeros == 0) {
                    if (full) {
                        qm_stage<NT, true, false>(acc, wbase, sc, xrow, xStride, gs, G, nt, g, 0, 0, 0, 0);
                    } else {
                        qm_stage<NT, false, false>(acc, wbase, sc, xrow, xStride, gs, G, nt, g, 0, 0, 0, 0);
                    }
                } else if (full) {
                    qm_stage<NT, true, true>(acc, wbase, sc, xrow, xStride, gs, G, nt, g, zLoRow, zHiRow, zshLo, zshHi);
                } else {
                    qm_stage<NT, false, true>(acc, wbase, sc, xrow, xStride, gs, G, nt, g, zLoRow, zHiRow, zshLo, zshHi);
                }
                if (AFTER) { // refill this slot once every lane is done with it
                    __syncwarp();
                    if (s + LEAD < nst) loadStage(s + LEAD);
                    cp_async_commit();
                }
            }
            cp_async_wait<0>();
            __syncwarp(); // every lane is done with the stages before the next chunk (or the hand-over) uses them
            if (LORA) {
                QmLora l = second ? lora1 : lora0;
                const float* bw = l.lo != 0 ? (const float*) l.table[e] : (const float*) 0;
                if (bw != 0) {
                    int rs = R + 4; // row stride of the staged tiles, floats: conflict-free 16-byte reads
                    if ((16 + MT) * rs * 4 <= ST * QM_STAGE) {
                        qm_lora_staged<NT, MT>(acc, l, bw, (float*) wst, rs, n0, N, R, order + start + c0, mcount, nt, g, t, lane);
                    } else {
                        qm_lora_terms(acc, l.s, [&](int m) { return (const float4*) (l.lo + (i64) order[start + c0 + m] * R); },
                                      (const float4*) (bw + (growLo - ebase) * R), (const float4*) (bw + (growHi - ebase) * R),
                                      mcount, nt, t, R); // the B rows of the warp's tile rows g and g + 8
                    }
                }
            }
        }
        if (FUSED) {
            // [NT * 4][32] f32: the second matrix's products in the drained stages of the warp that made them
            if (rowsHere && second) {
                float* hand = (float*) wst;
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int q = 0; q < 4; q++) hand[(4 * j + q) * 32 + lane] = acc[j][q];
            }
            __syncthreads();
            if (rowsHere && !second) {
                const float* hand = (const float*) (wst + HALF * (ST * QM_STAGE)); // the partner warp's
#pragma unroll
                for (int j = 0; j < NT; j++) {
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        int m = 8 * j + 2 * t + (q & 1);
                        int n = n0 + g + 8 * (q >> 1);
                        if (j < nt && m < mcount && n < N) {
                            float gv = acc[j][q];
                            store((i64) order[start + c0 + m] * N + n, gv / (1.0f + expf(-gv)) * hand[(4 * j + q) * 32 + lane]);
                        }
                    }
                }
            }
            __syncthreads(); // the hand-over is read before the next chunk refills the stages
        } else if (rowsHere) {
#pragma unroll
            for (int j = 0; j < NT; j++) {
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    int m = 8 * j + 2 * t + (q & 1);
                    int n = n0 + g + 8 * (q >> 1);
                    if (j < nt && m < mcount && n < N) store((i64) order[start + c0 + m] * N + n, acc[j][q]);
                }
            }
        }
    }
}

// The products of one matrix: qmma_int4_grouped_* refill a stage before its products (QM_STAGES - 1 in
// flight), qmma_int4_grouped_after_* after them (QM_STAGES in flight), qmma_int4_grouped_short_* with 3
// stages and three blocks an SM, qmma_int4_grouped_short4_* with 2 stages and four (short K, 8 x rows a chunk),
// qmma_int4_grouped_st2_* with 2 stages and two blocks (a K whose 8 staged x rows leave room for one block of 4 stages).
#define QM_KERNEL(NAME, MT, XT, XB, ST, AFTER, MINB)                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * QM_WARPS, MINB)                                                  \
        NAME##_m##MT##_##XT(const void* x, int xDiv, const int* offsets, const int* order, const int* active,          \
                            const u8* codes, const u16* scales, const u32* zeros, float* y, int N, int K, int xStride) { \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        qmma_grouped<MT, XB, ST, AFTER, false, false>(x, xDiv, offsets, order, active, codes, scales, zeros, 0, 0, 0, y, \
                                                       N, K, xStride);                                                  \
    }

// MXFP4 experts (FP4): the same launch shapes.
#define QM_KERNEL_FP4(NAME, MT, XT, XB, ST, AFTER, MINB)                                                               \
    extern "C" __global__ void __launch_bounds__(32 * QM_WARPS, MINB)                                                  \
        NAME##_m##MT##_##XT(const void* x, int xDiv, const int* offsets, const int* order, const int* active,          \
                            const u8* codes, const u8* scales, float* y, int N, int K, int xStride) {                  \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        qmma_grouped<MT, XB, ST, AFTER, false, false, false, true>(x, xDiv, offsets, order, active, codes,             \
                                                                   (const u16*) scales, 0, 0, 0, 0, y, N, K, xStride); \
    }

QM_KERNEL_FP4(qmma_mxfp4_grouped, 8, f32, false, QM_STAGES, false, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped, 16, f32, false, QM_STAGES, false, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped, 32, f32, false, QM_STAGES, false, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped, 8, bf16, true, QM_STAGES, false, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped, 16, bf16, true, QM_STAGES, false, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped, 32, bf16, true, QM_STAGES, false, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped_after, 8, f32, false, QM_STAGES, true, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped_after, 16, f32, false, QM_STAGES, true, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped_after, 32, f32, false, QM_STAGES, true, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped_after, 8, bf16, true, QM_STAGES, true, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped_after, 16, bf16, true, QM_STAGES, true, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped_after, 32, bf16, true, QM_STAGES, true, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped_short, 8, f32, false, 3, true, 3)
QM_KERNEL_FP4(qmma_mxfp4_grouped_short, 8, bf16, true, 3, true, 3)
QM_KERNEL_FP4(qmma_mxfp4_grouped_short4, 8, f32, false, 2, true, 4)
QM_KERNEL_FP4(qmma_mxfp4_grouped_short4, 8, bf16, true, 2, true, 4)
QM_KERNEL_FP4(qmma_mxfp4_grouped_st2, 8, f32, false, 2, true, 2)
QM_KERNEL_FP4(qmma_mxfp4_grouped_st2, 8, bf16, true, 2, true, 2)

QM_KERNEL(qmma_int4_grouped, 8, f32, false, QM_STAGES, false, 2)
QM_KERNEL(qmma_int4_grouped, 16, f32, false, QM_STAGES, false, 2)
QM_KERNEL(qmma_int4_grouped, 32, f32, false, QM_STAGES, false, 2)
QM_KERNEL(qmma_int4_grouped, 8, bf16, true, QM_STAGES, false, 2)
QM_KERNEL(qmma_int4_grouped, 16, bf16, true, QM_STAGES, false, 2)
QM_KERNEL(qmma_int4_grouped, 32, bf16, true, QM_STAGES, false, 2)
QM_KERNEL(qmma_int4_grouped_after, 8, f32, false, QM_STAGES, true, 2)
QM_KERNEL(qmma_int4_grouped_after, 16, f32, false, QM_STAGES, true, 2)
QM_KERNEL(qmma_int4_grouped_after, 32, f32, false, QM_STAGES, true, 2)
QM_KERNEL(qmma_int4_grouped_after, 8, bf16, true, QM_STAGES, true, 2)
QM_KERNEL(qmma_int4_grouped_after, 16, bf16, true, QM_STAGES, true, 2)
QM_KERNEL(qmma_int4_grouped_after, 32, bf16, true, QM_STAGES, true, 2)
QM_KERNEL(qmma_int4_grouped_short, 8, f32, false, 3, true, 3)
QM_KERNEL(qmma_int4_grouped_short, 8, bf16, true, 3, true, 3)
QM_KERNEL(qmma_int4_grouped_short4, 8, f32, false, 2, true, 4)
QM_KERNEL(qmma_int4_grouped_short4, 8, bf16, true, 2, true, 4)
QM_KERNEL(qmma_int4_grouped_st2, 8, f32, false, 2, true, 2)
QM_KERNEL(qmma_int4_grouped_st2, 8, bf16, true, 2, true, 2)

// One matrix with its LoRA term, f32 x and y: y[p] = x[p / xDiv] . W_e^T + s lo[p] . B_e^T (rollout's down
// projection with an adapter on the experts); the shapes of qmma_int4_grouped_after_*, _short_* and _short4_*.
#define QM_KERNEL_LORA(NAME, MT, ST, MINB)                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * QM_WARPS, MINB)                                                  \
        NAME##_m##MT##_f32(const void* x, int xDiv, const int* offsets, const int* order, const int* active,           \
                           const u8* codes, const u16* scales, const u32* zeros, float* y, int N, int K, int xStride,  \
                           const float* lo, const unsigned long long* table, float s, int R) {                         \
        ORBIT_TRACE_KERNEL();                                                                                          \
        pdl_enter();                                                                                                   \
        qmma_grouped<MT, false, ST, true, false, false, true>(x, xDiv, offsets, order, active, codes, scales, zeros, 0, \
                                                              0, 0, y, N, K, xStride, QmLora{lo, table, s},             \
                                                              QmLora{0, 0, 0.0f}, R);                                   \
    }

QM_KERNEL_LORA(qmma_int4_grouped_lora_after, 8, QM_STAGES, 2)
QM_KERNEL_LORA(qmma_int4_grouped_lora_after, 16, QM_STAGES, 2)
QM_KERNEL_LORA(qmma_int4_grouped_lora_after, 32, QM_STAGES, 2)
QM_KERNEL_LORA(qmma_int4_grouped_lora_short, 8, 3, 3)
QM_KERNEL_LORA(qmma_int4_grouped_lora_short4, 8, 2, 4)

// Gate and up of the same experts in one launch: act[p] = silu(x[p / xDiv] . G_e^T) * (x[p / xDiv] . U_e^T),
// bf16 [pairs, N] (G and U stacked [E * N, K] each, the same layout and zero-point form).
// qmma_int4_gate_up_*: QM_STAGES stages, two blocks an SM; qmma_int4_gate_up3_*: 2 stages, three blocks;
// qmma_int4_gate_up_st2_*: 2 stages, two blocks (16 x rows of a long K).
#define QM_GATE_UP(NAME, MT, XT, XB, ST, MINB)                                                                       \
    extern "C" __global__ void __launch_bounds__(32 * QM_WARPS, MINB)                                                \
        NAME##_m##MT##_##XT(const void* x, int xDiv, const int* offsets, const int* order, const int* active,        \
                            const u8* gcodes, const u16* gscales, const u32* gzeros, const u8* ucodes,               \
                            const u16* uscales, const u32* uzeros, u16* act, int N, int K, int xStride) {            \
        ORBIT_TRACE_KERNEL();                                                                                        \
        pdl_enter();                                                                                                 \
        qmma_grouped<MT, XB, ST, true, true, true>(x, xDiv, offsets, order, active, gcodes, gscales, gzeros, ucodes, \
                                                   uscales, uzeros, act, N, K, xStride);                             \
    }

QM_GATE_UP(qmma_int4_gate_up, 8, f32, false, QM_STAGES, 2)
QM_GATE_UP(qmma_int4_gate_up, 16, f32, false, QM_STAGES, 2)
QM_GATE_UP(qmma_int4_gate_up, 32, f32, false, QM_STAGES, 2)
QM_GATE_UP(qmma_int4_gate_up, 8, bf16, true, QM_STAGES, 2)
QM_GATE_UP(qmma_int4_gate_up, 16, bf16, true, QM_STAGES, 2)
QM_GATE_UP(qmma_int4_gate_up, 32, bf16, true, QM_STAGES, 2)
QM_GATE_UP(qmma_int4_gate_up3, 8, f32, false, 2, 3)
QM_GATE_UP(qmma_int4_gate_up3, 8, bf16, true, 2, 3)
QM_GATE_UP(qmma_int4_gate_up_st2, 16, f32, false, 2, 2)
QM_GATE_UP(qmma_int4_gate_up_st2, 16, bf16, true, 2, 2)

// Gate and up with their LoRA terms, f32 x and f32 act: act[p] = silu(x G_e^T + s_g lo_g[p] Bg_e^T) * (x U_e^T +
// s_u lo_u[p] Bu_e^T) (rollout's decode step with an adapter on the experts; the same shapes as above).
#define QM_GATE_UP_LORA(NAME, MT, ST, MINB)                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * QM_WARPS, MINB)                                                \
        NAME##_m##MT##_f32(const void* x, int xDiv, const int* offsets, const int* order, const int* active,         \
                           const u8* gcodes, const u16* gscales, const u32* gzeros, const u8* ucodes,                \
                           const u16* uscales, const u32* uzeros, float* act, int N, int K, int xStride,             \
                           const float* glo, const unsigned long long* gtable, float gs, const float* ulo,           \
                           const unsigned long long* utable, float us, int R) {                                      \
        ORBIT_TRACE_KERNEL();                                                                                        \
        pdl_enter();                                                                                                 \
        qmma_grouped<MT, false, ST, true, true, false, true>(x, xDiv, offsets, order, active, gcodes, gscales, gzeros, \
                                                             ucodes, uscales, uzeros, act, N, K, xStride,             \
                                                             QmLora{glo, gtable, gs}, QmLora{ulo, utable, us}, R);    \
    }

QM_GATE_UP_LORA(qmma_int4_gate_up_lora, 8, QM_STAGES, 2)
QM_GATE_UP_LORA(qmma_int4_gate_up_lora, 16, QM_STAGES, 2)
QM_GATE_UP_LORA(qmma_int4_gate_up_lora, 32, QM_STAGES, 2)
QM_GATE_UP_LORA(qmma_int4_gate_up_lora_st2, 16, 2, 2)
QM_GATE_UP_LORA(qmma_int4_gate_up_lora3, 8, 2, 3)
