// Per-expert weight gradients over expert-grouped rows (Backend.moeExpertGradTN): for active expert
// e = experts[blockIdx.y], G_e [N, M] += alpha · A[rows of e]ᵀ · B[rows of e], with A [P, N] and B [P, M]
// f32 row-major (row strides lda, ldb), the rows of e being [offsets[e], offsets[e + 1]) and G_e f32
// contiguous at address grads[e]. One block of 256 threads per (TN x TM tile of G_e, active expert);
// thread (ty, tx) of the 16 x 16 grid owns TN/16 rows and TM/16 columns of the tile and sums the
// expert's rows in ascending order, GK at a time through shared memory: deterministic, no atomics.
#define GK 16

template <int TN, int TM>
__device__ __forceinline__ void moe_grad_tn(const float* A, i64 lda, const float* B, i64 ldb, const int* offsets,
                                            const int* experts, const unsigned long long* grads, int N, int M, float alpha) {
    constexpr int RN = TN / 16;
    constexpr int RM = TM / 16;
    __shared__ __align__(16) float as[GK][TN];
    __shared__ __align__(16) float bs[GK][TM];
    int e = experts[blockIdx.y];
    int r0 = offsets[e];
    int r1 = offsets[e + 1];
    int tilesM = (M + TM - 1) / TM;
    int n0 = (blockIdx.x / tilesM) * TN;
    int m0 = (blockIdx.x % tilesM) * TM;
    int tx = threadIdx.x & 15;
    int ty = threadIdx.x >> 4;
    float acc[RN][RM];
#pragma unroll
    for (int i = 0; i < RN; i++) {
#pragma unroll
        for (int j = 0; j < RM; j++) acc[i][j] = 0.0f;
    }
    for (int k0 = r0; k0 < r1; k0 += GK) {
        for (int i = threadIdx.x; i < GK * TN; i += 256) {
            int kk = i / TN;
            int c = i % TN;
            int row = k0 + kk;
            as[kk][c] = row < r1 && n0 + c < N ? A[(i64) row * lda + n0 + c] : 0.0f;
        }
        for (int i = threadIdx.x; i < GK * TM; i += 256) {
            int kk = i / TM;
            int c = i % TM;
            int row = k0 + kk;
            bs[kk][c] = row < r1 && m0 + c < M ? B[(i64) row * ldb + m0 + c] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GK; kk++) {
            float a[RN];
            float b[RM];
#pragma unroll
            for (int i = 0; i < RN; i++) a[i] = as[kk][ty * RN + i];
#pragma unroll
            for (int j = 0; j < RM; j++) b[j] = bs[kk][tx * RM + j];
#pragma unroll
            for (int i = 0; i < RN; i++) {
#pragma unroll
                for (int j = 0; j < RM; j++) acc[i][j] += a[i] * b[j];
            }
        }
        __syncthreads();
    }
    float* g = (float*) grads[e];
#pragma unroll
    for (int i = 0; i < RN; i++) {
        int n = n0 + ty * RN + i;
        if (n >= N) continue;
#pragma unroll
        for (int j = 0; j < RM; j++) {
            int m = m0 + tx * RM + j;
            if (m < M) g[(i64) n * M + m] += alpha * acc[i][j];
        }
    }
}

// Square tiles; and tall or wide ones for a narrow side (a LoRA rank of 32 or less).
extern "C" __global__ void __launch_bounds__(256) moe_grad_tn_64x64(const float* A, i64 lda, const float* B, i64 ldb,
        const int* offsets, const int* experts, const unsigned long long* grads, int N, int M, float alpha) {
    moe_grad_tn<64, 64>(A, lda, B, ldb, offsets, experts, grads, N, M, alpha);
}

extern "C" __global__ void __launch_bounds__(256) moe_grad_tn_32x128(const float* A, i64 lda, const float* B, i64 ldb,
        const int* offsets, const int* experts, const unsigned long long* grads, int N, int M, float alpha) {
    moe_grad_tn<32, 128>(A, lda, B, ldb, offsets, experts, grads, N, M, alpha);
}

extern "C" __global__ void __launch_bounds__(256) moe_grad_tn_128x32(const float* A, i64 lda, const float* B, i64 ldb,
        const int* offsets, const int* experts, const unsigned long long* grads, int N, int M, float alpha) {
    moe_grad_tn<128, 32>(A, lda, B, ldb, offsets, experts, grads, N, M, alpha);
}
