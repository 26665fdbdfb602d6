// Decode attention over a latent paged cache on tensor cores (CudaLatentDecode): DeepSeek-V3's and Kimi-K2's
// multi-head latent attention in the absorbed form, where a token's cache entry is one key head of ML_D = 576 bf16
// channels (the normed latent, then the rope key) whose first ML_DV = 512 channels are also its value, and every query
// head of a sequence attends over the same entries. q f32 [B, Hq, 576] (strides qB, qH; even, 8-byte aligned rows),
// the cache kc bf16 [rows, 576] (16-byte aligned), sequence b's position s at row
// tables[b * maxBlocks + s / blockSize] * blockSize + s % blockSize, its query at position lens[b] - 1, out f32
// [B, Hq, 512] (strides oB, oH; even). No sliding window, no sinks.
//
// Grid B * headTiles * splits (the split fastest, then the tile of heads): a block takes 16 query heads
// (16 * tile .. + 15; rows past Hq are zero and written nowhere) over the split's keys, in tiles of ML_TK = 32 keys
// copied by the block's 8 warps into shared memory (cp.async, rows past the split's last key filled with zeros; the
// next tile's copies in flight while a tile is multiplied). Per tile:
//   Scores S [16, 32] = Q . K^T: warp w takes keys 8 (w & 3) .. + 7 over the channels 288 (w >> 2) .. + 287 (18
//   k-steps of mma m16n8k16; Q's A fragments prepared once in shared memory, q rounded to bf16 there), and the two
//   halves are summed through shared memory, then times the scale in f32.
//   Softmax: 16 threads a row (a half warp), two keys each: the row's online max m and sum l (f32), the probabilities
//   P rounded to bf16 into shared memory, the factor exp(m_old - m) by which the row's accumulator is rescaled.
//   Values O [16, 512] += P . V: warp w takes the channels 64 w .. + 63 (8 n-tiles, 2 k-steps), V read from the same
//   staged key rows (ldmatrix transposed).
// 98,752 bytes of shared memory and at most 128 registers a thread: two blocks an SM (the launcher's split count assumes
// as much). Beyond f32 accumulation the kernel rounds q and P to bf16, as the tensor-core paged kernels of paged_decode.cu do.
// With one split the block writes out = O / l; with several it writes partials (unnormalised O, m, l: a split that saw
// no key has m = -inf, l = 0) that attention_combine (attention.cu) merges.
#define ML_D 576
#define ML_DV 512
#define ML_TK 32                      // keys a tile
#define ML_ROW (ML_D + 8)             // a staged key row, bf16: 16 bytes of padding (conflict-free ldmatrix)
#define ML_KSTEPS (ML_D / 16)         // 36 k-steps of the scores
#define ML_HALF_KSTEPS (ML_KSTEPS / 2)
#define ML_CHUNKS (ML_D / 8)          // 16-byte copies a key row
#define ML_PROW (ML_TK + 8)           // a row of P, bf16
// shared memory, in bytes from the start
#define ML_STAGE_BYTES (ML_TK * ML_ROW * 2)
#define ML_QF_OFF (2 * ML_STAGE_BYTES)                      // Q's A fragments [36][32 lanes] uint4
#define ML_S_OFF (ML_QF_OFF + ML_KSTEPS * 32 * 16)          // the scores' halves [2][16][ML_TK] f32
#define ML_P_OFF (ML_S_OFF + 2 * 16 * ML_TK * 4)            // P [16][ML_PROW] bf16
#define ML_CORR_OFF (ML_P_OFF + 16 * ML_PROW * 2)           // each row's rescale factor [16] f32
#define ML_ML_OFF (ML_CORR_OFF + 16 * 4)                    // each row's final max and sum [16][2] f32
#define ML_SHARED_BYTES (ML_ML_OFF + 16 * 2 * 4)

extern "C" __global__ void __launch_bounds__(256, 2) paged_mla_decode_kvbf16(
        const float* q, i64 qB, i64 qH, const u16* kc, const int* tables, int maxBlocks, const int* lens, int blockSize,
        float* out, i64 oB, i64 oH, int Hq, int headTiles, float scale, int splits, int splitLen, float* partAcc,
        float* partMl) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    extern __shared__ __align__(16) unsigned char ml_sm[];
    const int tid = threadIdx.x;
    const int warp = tid >> 5;
    const int lane = tid & 31;
    const int g = lane >> 2;
    const int t = lane & 3;
    const int split = blockIdx.x % splits;
    const int tile = (blockIdx.x / splits) % headTiles;
    const int b = blockIdx.x / splits / headTiles;
    const int h0 = 16 * tile;
    const int pos = lens[b] - 1;
    const int ks = split * splitLen;
    const int ke = ks + splitLen - 1 < pos ? ks + splitLen - 1 : pos;   // the split's last key
    const int tiles = ke >= ks ? (ke - ks) / ML_TK + 1 : 0;
    const int* table = tables + (i64) b * maxBlocks;

    const u32 base = smem_addr(ml_sm);
    uint4* qf = (uint4*) (ml_sm + ML_QF_OFF);
    float* sc = (float*) (ml_sm + ML_S_OFF);
    u16* pm = (u16*) (ml_sm + ML_P_OFF);
    float* corrs = (float*) (ml_sm + ML_CORR_OFF);
    float* mls = (float*) (ml_sm + ML_ML_OFF);

    // the copies of the split's i-th tile into stage (i & 1): 32 rows of 72 16-byte chunks, 9 a thread
    auto load = [&](int i) {
        u32 stage = base + (u32) ((i & 1) * ML_STAGE_BYTES);
        int first = ks + i * ML_TK;
#pragma unroll
        for (int r = 0; r < ML_TK * ML_CHUNKS / 256; r++) {
            int c = tid + 256 * r;
            int key = c / ML_CHUNKS;
            int col = c - key * ML_CHUNKS;
            int s = first + key;
            bool valid = s <= ke;
            i64 row = valid ? (i64) table[s / blockSize] * blockSize + s % blockSize : 0;
            cp_async16_zfill(stage + (u32) ((key * ML_ROW + col * 8) * 2), kc + row * ML_D + col * 8, valid);
        }
    };
    if (tiles > 0) load(0);
    cp_async_commit();

    // Q's A fragments: k-step kk, lane L: rows g and g + 8 (heads h0 + g, h0 + g + 8), columns 16 kk + 2t, + 1 (a0, a1)
    // and + 8, + 9 (a2, a3), rounded to bf16
    for (int idx = tid; idx < ML_KSTEPS * 32; idx += 256) {
        int kk = idx >> 5;
        int fl = idx & 31;
        int fg = fl >> 2;
        int ft = fl & 3;
        u32 a[4];
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            int h = h0 + fg + 8 * hr;
            float2 x0 = make_float2(0.0f, 0.0f);
            float2 x1 = make_float2(0.0f, 0.0f);
            if (h < Hq) {
                const float* qr = q + (i64) b * qB + (i64) h * qH + 16 * kk + 2 * ft;
                x0 = *(const float2*) qr;
                x1 = *(const float2*) (qr + 8);
            }
            a[hr] = f32x2_to_bf16x2(x0.x, x0.y);
            a[2 + hr] = f32x2_to_bf16x2(x1.x, x1.y);
        }
        qf[idx] = make_uint4(a[0], a[1], a[2], a[3]);
    }

    // the softmax's row and keys of this thread, and its row's running max and sum (the same in the row's 16 threads)
    const int srow = tid >> 4;
    const int sk = 2 * (tid & 15);
    float m = -ORBIT_INF;
    float l = 0.0f;
    // this warp's accumulator: rows g (o[j][0], o[j][1]) and g + 8 (o[j][2], o[j][3]), channels 64 warp + 8 j + 2t, + 1
    float o[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int c = 0; c < 4; c++) o[j][c] = 0.0f;

    // ldmatrix lane offsets (bytes). Scores: key rows 8 nt + (lane & 7), channels + 8 (lane >> 3) (two k-steps a load).
    // Values: key rows 16 kk + 8 (mi & 1) + (lane & 7), channels + 8 (mi >> 1). P: rows (lane & 7) + 8 (mi & 1),
    // keys 16 kk + 8 (mi >> 1).
    const int nt = warp & 3;
    const int half = warp >> 2;
    const int mi = lane >> 3;
    const u32 kOff = (u32) (((8 * nt + (lane & 7)) * ML_ROW + half * (ML_D / 2) + 8 * mi) * 2);
    const u32 vOff = (u32) ((((mi & 1) * 8 + (lane & 7)) * ML_ROW + 64 * warp + (mi >> 1) * 8) * 2);
    const u32 pOff = (u32) ML_P_OFF + (u32) ((((lane & 7) + 8 * (mi & 1)) * ML_PROW + 8 * (mi >> 1)) * 2);

    for (int i = 0; i < tiles; i++) {
        cp_async_wait<0>();
        __syncthreads();   // tile i has landed for every thread, and every warp is done with tile i - 1
        if (i + 1 < tiles) load(i + 1);   // into the stage tile i - 1 held
        cp_async_commit();
        const u32 stage = base + (u32) ((i & 1) * ML_STAGE_BYTES);

        // scores: this warp's 8 keys over its half of the channels
        float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int kk = 0; kk < ML_HALF_KSTEPS; kk += 2) {
            u32 kf[4];
            ldsm_x4(stage + kOff + (u32) (kk * 32), kf);
            uint4 a = qf[(half * ML_HALF_KSTEPS + kk) * 32 + lane];
            mma_bf16_16816(s, a.x, a.y, a.z, a.w, kf[0], kf[1]);
            uint4 a2 = qf[(half * ML_HALF_KSTEPS + kk + 1) * 32 + lane];
            mma_bf16_16816(s, a2.x, a2.y, a2.z, a2.w, kf[2], kf[3]);
        }
        float* sh = sc + half * 16 * ML_TK;
        *(float2*) (sh + g * ML_TK + 8 * nt + 2 * t) = make_float2(s[0], s[1]);
        *(float2*) (sh + (g + 8) * ML_TK + 8 * nt + 2 * t) = make_float2(s[2], s[3]);
        __syncthreads();

        // softmax: row srow, keys sk and sk + 1 of the tile
        {
            int key0 = ks + i * ML_TK + sk;
            float2 a = *(const float2*) (sc + srow * ML_TK + sk);
            float2 c = *(const float2*) (sc + 16 * ML_TK + srow * ML_TK + sk);
            float s0 = key0 <= ke ? (a.x + c.x) * scale : -ORBIT_INF;
            float s1 = key0 + 1 <= ke ? (a.y + c.y) * scale : -ORBIT_INF;
            float mx = fmaxf(s0, s1);
#pragma unroll
            for (int w = 1; w < 16; w <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, w));
            float mn = fmaxf(m, mx);
            float corr = mn == -ORBIT_INF ? 1.0f : expf(m - mn);
            float p0 = mn == -ORBIT_INF ? 0.0f : expf(s0 - mn);
            float p1 = mn == -ORBIT_INF ? 0.0f : expf(s1 - mn);
            float sum = p0 + p1;
#pragma unroll
            for (int w = 1; w < 16; w <<= 1) sum += __shfl_xor_sync(0xffffffffu, sum, w);
            l = l * corr + sum;
            m = mn;
            *(u32*) (pm + srow * ML_PROW + sk) = f32x2_to_bf16x2(p0, p1);
            if ((tid & 15) == 0) corrs[srow] = corr;
        }
        __syncthreads();

        // values: this warp's 64 channels, rescaled first
        float c0 = corrs[g];
        float c1 = corrs[g + 8];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            o[j][0] *= c0;
            o[j][1] *= c0;
            o[j][2] *= c1;
            o[j][3] *= c1;
        }
#pragma unroll
        for (int kk = 0; kk < ML_TK / 16; kk++) {
            u32 pa[4];
            ldsm_x4(base + pOff + (u32) (kk * 32), pa);
#pragma unroll
            for (int dp = 0; dp < 4; dp++) {
                u32 vf[4];
                ldsm_x4_trans(stage + vOff + (u32) (kk * 16 * ML_ROW * 2 + dp * 32), vf);
                mma_bf16_16816(o[2 * dp], pa[0], pa[1], pa[2], pa[3], vf[0], vf[1]);
                mma_bf16_16816(o[2 * dp + 1], pa[0], pa[1], pa[2], pa[3], vf[2], vf[3]);
            }
        }
    }
    cp_async_wait<0>();

    if ((tid & 15) == 0) {
        mls[2 * srow] = m;
        mls[2 * srow + 1] = l;
    }
    __syncthreads();
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        int r = g + 8 * hr;
        int h = h0 + r;
        if (h >= Hq) continue;
        float rm = mls[2 * r];
        float rl = mls[2 * r + 1];
        if (splits == 1) {
            float inv = 1.0f / rl;
            float* orow = out + (i64) b * oB + (i64) h * oH + 64 * warp + 2 * t;
#pragma unroll
            for (int j = 0; j < 8; j++) *(float2*) (orow + 8 * j) = make_float2(o[j][2 * hr] * inv, o[j][2 * hr + 1] * inv);
        } else {
            i64 part = ((i64) b * Hq + h) * splits + split;
            float* prow = partAcc + part * ML_DV + 64 * warp + 2 * t;
#pragma unroll
            for (int j = 0; j < 8; j++) *(float2*) (prow + 8 * j) = make_float2(o[j][2 * hr], o[j][2 * hr + 1]);
            if (warp == 0 && t == 0) {
                partMl[2 * part] = rm;
                partMl[2 * part + 1] = rl;
            }
        }
    }
}
