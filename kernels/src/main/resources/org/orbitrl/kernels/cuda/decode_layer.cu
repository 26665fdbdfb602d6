// A Qwen3-MoE decoder layer at one decode token as one cooperative launch (one block an SM):
//   h = rmsnorm(x) · inNorm;  q, k, v = h · Wqᵀ, Wkᵀ, Wvᵀ;  per head RMSNorm (qNorm, kNorm) and rope at pos;
//   k, v written into the paged caches at slot;  a = softmax(q · Kᵀ · scale) · V over the sequence's keys;
//   out = x + a · Woᵀ;  h2 = rmsnorm(out) · postNorm;  the router's top-k (softmax, optional renormalisation);
//   out += Σ_j w_j · Down[e_j](silu(G[e_j] h2) · U[e_j] h2)   (experts INT4 group-32, symmetric).
//
// At one token every phase is a few microseconds of loads, so the separate launches of a layer (fourteen, each paying
// its latency and starting with no loads in flight) leave the memory idle most of the step. Here a producer warp
// copies every weight its block multiplies into shared memory (cp.async, 16 bytes a lane; each chunk of rows completes
// an mbarrier through cp.async.mbarrier.arrive) as soon as the bytes are known and the ring has room: q/k/v at the
// start, o and the router rows as soon as q/k/v are multiplied (they arrive during the grid barrier and the
// attention), the routed experts' gate, up and down rows together as soon as the top-k is known. Twelve consumer warps
// compute; they synchronise among themselves (named barrier 1), never with the producer, whose copies may wait for the
// memory queue. On the H200 this is not yet faster than the separate launches (BENCHMARKS.md: the copies of one warp
// stream at about a third of the copy bandwidth for these shares, and the consumers' own loads queue behind them).
// The phases pass their outputs through global memory across grid barriers:
//   P1  q/k/v rows [5120 at Qwen3-30B-A3B] split over the blocks        -> qkv
//   P2  attention: (kv head, key split) a block, the new key's norm, rope and cache write in the split holding it;
//       the split's first tile of cached keys and values, the norms' weights and the rope row loaded before P1 ends
//                                                                       -> partial (max, sum, acc) a q head a split
//   P3  the splits combined, a (q head, quarter of its dims) a block     -> attn
//   P4  o rows split over the blocks, added to x                        -> out
//   P5  every block: h2 = rmsnorm(out); router rows b, b + grid         -> logits
//   P6  every block: the top-k; (expert, row) pairs of gate and up      -> act = silu(g) · u
//   P7  down rows split over the blocks (the same rows as P4), the experts' products weighted in expert order into out
// Products accumulate in f32 over exact weight values (bf16 widened, INT4 (code − 8) · scale); the sums run in another
// order than the separate kernels', so the layer agrees with them to rounding, not bit for bit (exact mode keeps its
// own kernels). Restrictions the host checks: hidden ≤ 2048 and a multiple of 32 (a consumer thread holds its values of
// the input in registers), experts' width ≤ 2048, top-k ≤ 8, q heads a kv head ≤ 16, head dim ≤ 256 and a multiple of 4, bf16
// weights with 16-byte aligned rows, every block's share of a phase within the ring (CudaDecodeLayer.ringBytes
// bounds what the plans below take).

#include "qgemv_group.cuh"
#include "router.cuh"

#define DL_THREADS 384   // the consumer warps' threads
#define DL_WARPS 12
#define DL_BLOCK 416     // and the producer warp
#define DL_NT 6          // values of a hidden-sized row a consumer thread takes: hidden <= DL_THREADS * DL_NT
#define DL_QT 11         // q values of a kv head's heads a consumer thread stages: ratio * D <= DL_THREADS * DL_QT
#define DL_KT 6          // (key, 4 dims) pieces of a tile a consumer thread loads: DL_TK * D / 4 <= DL_THREADS * DL_KT
#define DL_BARS 64       // mbarriers: P1 chunks 0..15, P4 16..29, router rows 30..31, P6 32..47, P7 48..55
#define DL_MAX_TOPK 8
#define DL_TK 32         // keys of an attention tile
#define DL_MAX_SPLITS 256
#define DL_MAX_RATIO 16  // q heads of a kv head
#define DL_MAX_DROWS 64  // down rows of a block

// The consumer warps' barrier (named barrier 1, DL_THREADS threads; the producer warp never joins it).
__device__ __forceinline__ void dl_csync() {
    asm volatile("bar.sync 1, 384;" ::: "memory");
}

// Sum over the consumer threads; every one gets it. sh: 32 floats of shared memory.
__device__ __forceinline__ float dl_csum(float v, float* sh) {
    int lane = threadIdx.x & 31;
    int wid = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) sh[wid] = v;
    dl_csync();
    v = lane < DL_WARPS ? sh[lane] : 0.0f;
    v = warp_sum(v);
    dl_csync();
    return v;
}

__device__ __forceinline__ void dl_bar_init(unsigned long long* bar) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 32;" ::"r"(smem_addr(bar)) : "memory");
}

// Copies [src, src + bytes) (both 16-byte aligned, bytes a multiple of 16) into dst by the producer warp, 16 bytes a
// lane a step (cp.async.cg: through L2, not L1).
__device__ __forceinline__ void dl_copy(char* dst, const char* src, u32 bytes, int lane) {
    for (u32 o = (u32) lane * 16; o < bytes; o += 32 * 16) cp_async16_zfill(smem_addr(dst + o), src + o, true);
}

// The lane's copies issued so far arrive on bar once they have landed (a barrier counts the producer's 32 lanes).
__device__ __forceinline__ void dl_copies_arrive(unsigned long long* bar) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(smem_addr(bar)) : "memory");
}

// Waits until the chunk of bar has landed (each barrier completes once a launch: parity 0).
__device__ __forceinline__ void dl_wait(unsigned long long* bar) {
    u32 done;
    do {
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0; selp.u32 %0, 1, 0, p; }"
                     : "=r"(done)
                     : "r"(smem_addr(bar))
                     : "memory");
    } while (!done);
}

// The bytes [src, src + n) widened to 16-byte boundaries on both sides (never past the 16 bytes holding the last one,
// so never into another page): its size, and the offset of src in it.
__device__ __forceinline__ u32 dl_span(const void* src, u32 n, const char** base) {
    size_t a = (size_t) src & ~(size_t) 15;
    size_t e = ((size_t) src + n + 15) & ~(size_t) 15;
    *base = (const char*) a;
    return (u32) (e - a);
}

// Items [lo, hi) of n split evenly over the grid: block b's share.
__device__ __forceinline__ void dl_range(int n, int& lo, int& hi) {
    lo = (int) ((i64) n * blockIdx.x / gridDim.x);
    hi = (int) ((i64) n * (blockIdx.x + 1) / gridDim.x);
}

// Rows a chunk of a share of n rows of rowBytes: about 16 KiB, at most maxChunks chunks.
__device__ __forceinline__ int dl_chunk_rows(int n, int rowBytes, int maxChunks) {
    int c = 16384 / rowBytes;
    if (c < 1) c = 1;
    int need = (n + maxChunks - 1) / maxChunks;
    return c > need ? c : need;
}

// Timestamps of a launch's phases (trace non-null: [grid][16] ns of the global timer, block by block).
__device__ __forceinline__ void dl_mark(long long* trace, int k) {
    if (trace != 0 && threadIdx.x == 0) {
        long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        trace[blockIdx.x * 16 + k] = t;
    }
}

// acc + one 16-byte unit of bf16 weights times its 8 values of x.
__device__ __forceinline__ float dl_bf16_unit(uint4 w, const float* xs, float acc) {
    u32 words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        acc = fmaf(__uint_as_float(words[i] << 16), xs[2 * i], acc);
        acc = fmaf(__uint_as_float(words[i] & 0xffff0000u), xs[2 * i + 1], acc);
    }
    return acc;
}

// A bf16 row of K values (ring, 16-byte aligned) times x (shared f32, 16-byte aligned): the warp's sum. Lane l takes the
// 16-byte units l, l + 32, ..; four units' loads issued before their products.
__device__ __forceinline__ float dl_row_bf16(const uint4* w, int K, const float* x, int lane) {
    float acc = 0.0f;
    int units = K / 8;
    for (int u0 = lane; u0 < units; u0 += 128) {
        uint4 q[4];
        float4 a[4][2];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int u = u0 + 32 * i;
            if (u < units) {
                q[i] = w[u];
                a[i][0] = ((const float4*) x)[2 * u];
                a[i][1] = ((const float4*) x)[2 * u + 1];
            }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (u0 + 32 * i < units) {
                float xs[8] = {a[i][0].x, a[i][0].y, a[i][0].z, a[i][0].w, a[i][1].x, a[i][1].y, a[i][1].z, a[i][1].w};
                acc = dl_bf16_unit(q[i], xs, acc);
            }
        }
    }
    return warp_sum(acc);
}

// An INT4 row of K values (codes two to a byte, 8 a word; scales bf16 a 32-value group, u16 at any offset) times x
// (shared f32, 16-byte aligned): the warp's sum. Lane l takes the words l, l + 32, ..; four words' loads issued before
// their products.
__device__ __forceinline__ float dl_row_int4(const u32* codes, const u16* scales, int K, const float* x, int lane) {
    float acc = 0.0f;
    int words = K / 8;
    for (int u0 = lane; u0 < words; u0 += 128) {
        u32 q[4];
        u16 sc[4];
        float4 a[4][2];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int u = u0 + 32 * i;
            if (u < words) {
                q[i] = codes[u];
                sc[i] = scales[u >> 2];
                a[i][0] = ((const float4*) x)[2 * u];
                a[i][1] = ((const float4*) x)[2 * u + 1];
            }
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (u0 + 32 * i < words) {
                float w[8];
                qg_decode8<QF_INT4>(q[i], 8388616.0f, w); // 2^23 + 8: codes - 8
                float d = w[0] * a[i][0].x;
                d = fmaf(w[1], a[i][0].y, d);
                d = fmaf(w[2], a[i][0].z, d);
                d = fmaf(w[3], a[i][0].w, d);
                d = fmaf(w[4], a[i][1].x, d);
                d = fmaf(w[5], a[i][1].y, d);
                d = fmaf(w[6], a[i][1].z, d);
                d = fmaf(w[7], a[i][1].w, d);
                acc = fmaf(d, bf16_to_f32(sc[i]), acc);
            }
        }
    }
    return warp_sum(acc);
}

__device__ __forceinline__ void dl_norm_of(const float* v, const void* w, int wBf16, float eps, int H, float* h, float* sh);

__device__ __forceinline__ void dl_norm(const float* x, const void* w, int wBf16, float eps, int H, float* h, float* sh) {
    float v[DL_NT];
#pragma unroll
    for (int k = 0; k < DL_NT; k++) {
        int c = threadIdx.x + k * DL_THREADS;
        v[k] = c < H ? __ldcg(x + c) : 0.0f;
    }
    dl_norm_of(v, w, wBf16, eps, H, h, sh);
}

// dl_norm of the values v[k] = x[threadIdx.x + 256 k] already loaded.
__device__ __forceinline__ void dl_norm_of(const float* v, const void* w, int wBf16, float eps, int H, float* h, float* sh) {
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < DL_NT; k++) ss += v[k] * v[k];
    ss = dl_csum(ss, sh);
    float inv = 1.0f / sqrtf(ss / (float) H + eps);
#pragma unroll
    for (int k = 0; k < DL_NT; k++) {
        int c = threadIdx.x + k * DL_THREADS;
        if (c < H) {
            float wi = wBf16 ? bf16_to_f32(((const u16*) w)[c]) : ((const float*) w)[c];
            h[c] = wi * (v[k] * inv);
        }
    }
    dl_csync();
}

// dst[0 .. n) = src[0 .. n) by the consumer warps (n a multiple of 4, both 16-byte aligned; src read past L1), each thread's
// loads of a round issued before any is stored.
__device__ __forceinline__ void dl_stage(float* dst, const float* src, int n) {
    const float4* s4 = (const float4*) src;
    float4* d4 = (float4*) dst;
    int n4 = n / 4;
    for (int base = 0; base < n4; base += 8 * DL_THREADS) {
        float4 v[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int i = base + threadIdx.x + k * DL_THREADS;
            if (i < n4) v[k] = __ldcg(s4 + i);
        }
#pragma unroll
        for (int k = 0; k < 8; k++) {
            int i = base + threadIdx.x + k * DL_THREADS;
            if (i < n4) d4[i] = v[k];
        }
    }
    dl_csync();
}

// Four values of a cache row as f32: a 16-byte load (f32) or an 8-byte one (bf16).
__device__ __forceinline__ float4 dl_ld4(const float* p) {
    return *(const float4*) p;
}

__device__ __forceinline__ float4 dl_ld4(const u16* p) {
    return bf16x4_to_f32(*(const uint2*) p);
}

__device__ __forceinline__ float dl_round(float v, const float*) {
    return v;
}

__device__ __forceinline__ float dl_round(float v, const u16*) {
    return bf16_to_f32(f32_to_bf16_bits(v));
}

__device__ __forceinline__ void dl_store(float* p, float v) {
    *p = v;
}

__device__ __forceinline__ void dl_store(u16* p, float v) {
    *p = f32_to_bf16_bits(v);
}

// One head's D values in buf (shared): RMSNorm with the weights w (shared f32; null: no norm), then rope by the row
// cs, sn (shared, the position's cos and sin; qkv_prep_head's expressions, rot false: none), by one warp; the result
// back into buf.
__device__ __forceinline__ void dl_head_prep(float* buf, int D, const float* w, float eps, bool rot, const float* cs, const float* sn,
                                             int half, int interleaved, int lane) {
    if (w != 0) {
        float ss = 0.0f;
        for (int c = lane; c < D; c += 32) ss += buf[c] * buf[c];
        ss = warp_sum(ss);
        float inv = 1.0f / sqrtf(ss / (float) D + eps);
        __syncwarp();
        for (int c = lane; c < D; c += 32) buf[c] = w[c] * (buf[c] * inv);
        __syncwarp();
    }
    float o[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int c = lane + 32 * i;
        o[i] = 0.0f;
        if (c < D) {
            o[i] = buf[c];
            if (rot && c < 2 * half) {
                int jj = interleaved ? c >> 1 : (c < half ? c : c - half);
                bool first = interleaved ? (c & 1) == 0 : c < half;
                float x1 = first ? buf[c] : buf[interleaved ? c - 1 : c - half];
                float x2 = first ? buf[interleaved ? c + 1 : c + half] : buf[c];
                o[i] = first ? x1 * cs[jj] - x2 * sn[jj] : x2 * cs[jj] + x1 * sn[jj];
            }
        }
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 8; i++) {
        int c = lane + 32 * i;
        if (c < D) buf[c] = o[i];
    }
    __syncwarp();
}

// Keys and values [t0, t0 + tn) of kv head g into kt, vt (shared f32 [DL_TK][D]) by the consumer warps, all of a
// thread's loads issued before any is stored; the key `skip` (the new one, not yet in the cache) is left out.
template <typename CT>
__device__ __forceinline__ void dl_load_tile(float* kt, float* vt, const CT* kc, const CT* vc, const int* tables, int blockSize, int Nk,
                                             int g, int D, int t0, int tn, int skip) {
    int D4 = D / 4;
    float4 kq[DL_KT], vq[DL_KT];
#pragma unroll
    for (int k = 0; k < DL_KT; k++) {
        int idx = threadIdx.x + k * DL_THREADS; // (key, 4 dims)
        int t = idx / D4;
        if (t < tn && t0 + t != skip) {
            int key = t0 + t;
            i64 at = ((i64) tables[key / blockSize] * blockSize + key % blockSize) * Nk + (i64) g * D + 4 * (idx - t * D4);
            kq[k] = dl_ld4(kc + at);
            vq[k] = dl_ld4(vc + at);
        }
    }
#pragma unroll
    for (int k = 0; k < DL_KT; k++) {
        int idx = threadIdx.x + k * DL_THREADS;
        int t = idx / D4;
        if (t < tn && t0 + t != skip) {
            ((float4*) kt)[idx] = kq[k];
            ((float4*) vt)[idx] = vq[k];
        }
    }
}

// Grid barrier k (1-based) of the launch among the consumer warps: arrivals count in bar[0].
__device__ __forceinline__ void dl_grid_sync(u32* bar, u32 k) {
    dl_csync();
    if (threadIdx.x == 0) {
        __threadfence();
        atomicAdd(bar, 1u);
        u32 target = k * gridDim.x;
        u32 v;
        do {
            asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(bar) : "memory");
        } while (v < target);
    }
    dl_csync();
}

// The producer's wait until the consumers have posted stage s (a shared counter they raise).
__device__ __forceinline__ void dl_wait_stage(volatile int* stage, int s) {
    while (*stage < s) __nanosleep(64);
}

// A chunk's pieces laid end to end in the ring from cursor: each source [srcs[q], + lens[q]) widened to 16 bytes,
// its widened base and size, its ring position and the ring offset of its first source byte.
__device__ __forceinline__ void dl_pieces(const char* const* srcs, const u32* lens, int pieces, u32& cursor, const char** bases,
                                          u32* sizes, u32* at, int* offs) {
    for (int q = 0; q < pieces; q++) {
        sizes[q] = dl_span(srcs[q], lens[q], &bases[q]);
        at[q] = cursor;
        offs[q] = (int) (cursor + (srcs[q] - bases[q]));
        cursor += sizes[q];
    }
}

// The plan of a block's gate/up pairs [plo, phi) of topk · I and its down rows [dlo, dhi): chunks of pairs within one
// expert, then one chunk an expert of down rows, each piece widened to 16 bytes, laid end to end in the ring. The
// producer issues it and the consumers walk it the same way (f is called with the chunk's barrier, its items and its
// pieces' sources, sizes, ring positions and the ring offsets of their first source bytes), so no table passes
// between them.
template <typename F>
__device__ __forceinline__ void dl_expert_plan(const char* gc, const char* gs, const char* uc, const char* us, const char* dc,
                                               const char* ds, const int* sid, int topk, int H, int I, int plo, int phi, int dlo,
                                               int dhi, F f) {
    int cBytes = H / 2;
    int sBytes = H / 16;
    int dcBytes = I / 2;
    int dsBytes = I / 16;
    u32 cursor = 0;
    int c = 32;
    // at most 16 - topk chunks of whole size and one partial chunk an expert: 16 in all
    int per = dl_chunk_rows(phi - plo, 2 * (cBytes + sBytes), 16 - topk);
    for (int j = plo / I; j < topk && j * I < phi; j++) {
        int na = plo > j * I ? plo - j * I : 0;
        int nb = phi < (j + 1) * I ? phi - j * I : I;
        for (int n = na; n < nb; n += per, c++) {
            int ne = n + per < nb ? n + per : nb;
            i64 row = (i64) sid[j] * I + n;
            const char* srcs[4] = {gc + row * cBytes, uc + row * cBytes, gs + row * sBytes, us + row * sBytes};
            u32 lens4[4] = {(u32) (ne - n) * cBytes, (u32) (ne - n) * cBytes, (u32) (ne - n) * sBytes, (u32) (ne - n) * sBytes};
            const char* bases[4];
            u32 sizes[4];
            u32 at[4];
            int offs[4];
            dl_pieces(srcs, lens4, 4, cursor, bases, sizes, at, offs);
            f(c, j * I + n, j * I + ne, bases, sizes, at, offs, 4);
        }
    }
    for (int j = 0; j < topk; j++) {
        i64 row = (i64) sid[j] * H + dlo;
        const char* srcs[2] = {dc + row * dcBytes, ds + row * dsBytes};
        u32 lens2[2] = {(u32) (dhi - dlo) * dcBytes, (u32) (dhi - dlo) * dsBytes};
        const char* bases[4];
        u32 sizes[4];
        u32 at[4];
        int offs[4];
        dl_pieces(srcs, lens2, 2, cursor, bases, sizes, at, offs);
        f(48 + j, dlo, dhi, bases, sizes, at, offs, 2);
    }
}

#define DL_ARGS(CT)                                                                                                          \
    const float *__restrict__ x, float *__restrict__ out, const void *inNorm, const void *postNorm, int normBf16, float eps,   \
            const u16 *__restrict__ wq, const u16 *__restrict__ wk, const u16 *__restrict__ wv, const u16 *__restrict__ wo,        \
            const void *qNorm, const void *kNorm, int headNormBf16, const float *cosT, const float *sinT, int half,              \
            int interleaved, int maxPos, const int *pos, CT *kc, CT *vc, const int *slots, const int *tables, int maxBlocks,    \
            const int *lens, int blockSize, float scale, const u16 *__restrict__ router, int E, int topk, int normalize,        \
            const char *__restrict__ gc, const char *__restrict__ gs, const char *__restrict__ uc, const char *__restrict__ us,   \
            const char *__restrict__ dc, const char *__restrict__ ds, int H, int Hq, int Hkv, int D, int I, int splits,        \
            float *qkv, float *part, float *attn, float *logits, float *act, u32 *bar, int *err, int ringBytes,                 \
            long long *trace

template <typename CT>
__device__ __forceinline__ void decode_layer(DL_ARGS(CT)) {
    extern __shared__ __align__(128) unsigned char dl_smem[];
    __shared__ __align__(8) unsigned long long bars[DL_BARS];
    __shared__ float sh[32];
    __shared__ float swt[DL_MAX_TOPK];
    __shared__ int sid[DL_MAX_TOPK];
    __shared__ float red[DL_MAX_TOPK][DL_MAX_DROWS];
    __shared__ float mrow[DL_MAX_RATIO], lrow[DL_MAX_RATIO], crow[DL_MAX_RATIO];
    __shared__ float fw[DL_MAX_SPLITS];
    __shared__ volatile int stage; // 1: q/k/v multiplied (the ring is free for o); 2: the top-k chosen, o and router used
    __shared__ int expertsOk;
    char* ring = (char*) dl_smem;
    float* h = (float*) (dl_smem + ringBytes); // [H]
    float* aux = h + H;                         // attention's q, k, v, tiles; o's input; down's act rows
    int lane = threadIdx.x & 31;
    int warp = threadIdx.x >> 5;
    int G = gridDim.x;
    int b = blockIdx.x;
    int Nq = Hq * D;
    int Nk = Hkv * D;
    int Nqkv = Nq + 2 * Nk;
    int ratio = Hq / Hkv;
    int rowBytes = H * 2;
    int lo, hi;
    dl_range(Nqkv, lo, hi);
    int cr = dl_chunk_rows(hi - lo, rowBytes, 16);
    int olo, ohi;
    dl_range(H, olo, ohi);
    int oBytes = Nq * 2;
    int ocr = dl_chunk_rows(ohi - olo, oBytes, 14);
    int routerAt = (ohi - olo) * oBytes;
    int P = topk * I;
    int plo, phi;
    dl_range(P, plo, phi);
    int dlo = olo;
    int dhi = ohi;

    // The consumers' first loads go ahead of the weights' copies (a block's loads and copies share one queue).
    float xv[DL_NT]; // the layer input
    int len = 0, p = 0, slot = 0;
    if (warp < DL_WARPS) {
#pragma unroll
        for (int k = 0; k < DL_NT; k++) {
            int c = threadIdx.x + k * DL_THREADS;
            xv[k] = c < H ? __ldcg(x + c) : 0.0f;
        }
        len = lens[0];
        p = pos[0];
        slot = slots[0];
    }
    if (threadIdx.x == 0) {
        for (int i = 0; i < DL_BARS; i++) dl_bar_init(&bars[i]);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        stage = 0;
    }
    __syncthreads(); // the only barrier the producer joins

    if (warp == DL_WARPS) { // the producer warp: every copy of the block
        for (int s = lo, c = 0; s < hi; s += cr, c++) { // P1: q/k/v rows, row r at (r - lo) * 2H
            int e = s + cr < hi ? s + cr : hi;
            for (int r = s; r < e;) { // the chunk's pieces of q, k and v
                const u16* w = r < Nq ? wq + (i64) r * H : r < Nq + Nk ? wk + (i64) (r - Nq) * H : wv + (i64) (r - Nq - Nk) * H;
                int end = r < Nq ? Nq : r < Nq + Nk ? Nq + Nk : Nqkv;
                int n = (end < e ? end : e) - r;
                dl_copy(ring + (i64) (r - lo) * rowBytes, (const char*) w, (u32) n * rowBytes, lane);
                r += n;
            }
            dl_copies_arrive(&bars[c]);
        }
        dl_wait_stage(&stage, 1);
        for (int s = olo, c = 0; s < ohi; s += ocr, c++) { // P4: o rows, row r at (r - olo) * 2 Nq
            int e = s + ocr < ohi ? s + ocr : ohi;
            dl_copy(ring + (i64) (s - olo) * oBytes, (const char*) (wo + (i64) s * Nq), (u32) (e - s) * oBytes, lane);
            dl_copies_arrive(&bars[16 + c]);
        }
        for (int i = 0; i < 2 && b + i * G < E; i++) { // P5: router rows b and b + grid
            dl_copy(ring + routerAt + i * rowBytes, (const char*) (router + (i64) (b + i * G) * H), (u32) rowBytes, lane);
            dl_copies_arrive(&bars[30 + i]);
        }
        dl_wait_stage(&stage, 2);
        __threadfence_block();
        if (!expertsOk) {
            cp_async_wait<0>(); // no copy outlives its lane
            return;
        }
        dl_expert_plan(gc, gs, uc, us, dc, ds, sid, topk, H, I, plo, phi, dlo, dhi,
                       [&](int c, int, int, const char** bases, const u32* sizes, const u32* at, const int*, int pieces) {
                           for (int q = 0; q < pieces; q++) dl_copy(ring + at[q], bases[q], sizes[q], lane);
                           dl_copies_arrive(&bars[c]);
                       });
        cp_async_wait<0>(); // no copy outlives its lane
        return;
    }

    // ---- the consumer warps
    dl_mark(trace, 0);
    bool rot = p >= 0 && p < maxPos;
    if (!rot && b == 0 && threadIdx.x == 0) report_error(err, ERR_POSITION_OUT_OF_RANGE, p, 0);
    int splitLen = (len + splits - 1) / splits;
    bool attends = b < Hkv * splits;
    int g = b / splits;
    int k0 = (b % splits) * splitLen;
    int k1 = k0 + splitLen < len ? k0 + splitLen : len;
    float* qs = aux;                    // [ratio][D]: the block's q heads, normed and roped
    float* kn = qs + ratio * D;         // [D]: the new key (rounded as the cache holds it)
    float* vn = kn + D;                 // [D]: the new value
    float* sc = vn + D;                 // [ratio][DL_TK]: a tile's scores, then its softmax terms
    float* kt = sc + ratio * DL_TK;     // [DL_TK][D]: a tile's keys
    float* vt = kt + DL_TK * D;         // [DL_TK][D]: its values
    float* accs = vt + DL_TK * D;       // [ratio][D]: the running sums of p · v
    float* qw = accs + ratio * D;       // [D]: q's norm weights
    float* kw = qw + D;                 // [D]: k's
    float* cs = kw + D;                 // [D / 2]: the rope row at p
    float* sn = cs + D;                 // [D / 2]

    dl_norm_of(xv, inNorm, normBf16, eps, H, h, sh);
    dl_mark(trace, 1);

    // P1: q, k, v.
    for (int r = lo + warp; r < hi; r += DL_WARPS) {
        dl_wait(&bars[(r - lo) / cr]);
        float v = dl_row_bf16((const uint4*) (ring + (i64) (r - lo) * rowBytes), H, h, lane);
        if (lane == 0) qkv[r] = v;
    }
    dl_csync();
    if (threadIdx.x == 0) {
        __threadfence_block();
        stage = 1; // the ring is the o rows' now
    }
    // The attention's inputs that need nothing of this layer: the norms' weights, the rope row, the first tile of
    // cached keys and values (every key but the new one).
    if (attends) {
        for (int c = threadIdx.x; c < D; c += DL_THREADS) {
            qw[c] = qNorm == 0 ? 1.0f : headNormBf16 ? bf16_to_f32(((const u16*) qNorm)[c]) : ((const float*) qNorm)[c];
            kw[c] = kNorm == 0 ? 1.0f : headNormBf16 ? bf16_to_f32(((const u16*) kNorm)[c]) : ((const float*) kNorm)[c];
            if (c < half) {
                cs[c] = rot ? cosT[(i64) p * half + c] : 1.0f;
                sn[c] = rot ? sinT[(i64) p * half + c] : 0.0f;
            }
        }
        dl_load_tile(kt, vt, kc, vc, tables, blockSize, Nk, g, D, k0, k1 - k0 < DL_TK ? k1 - k0 : DL_TK, len - 1);
    }
    dl_mark(trace, 2);
    dl_grid_sync(bar, 1);
    dl_mark(trace, 3);

    // P2: attention of kv head g over the keys [k0, k1).
    if (attends) {
        bool holdsNew = k0 <= len - 1 && len - 1 < k1;
        // q's heads of this kv head (contiguous), and where the block holds the new key, k and v: one round of loads
        {
            float v[DL_QT];
            int n = ratio * D;
#pragma unroll
            for (int i = 0; i < DL_QT; i++) {
                int c = threadIdx.x + i * DL_THREADS;
                if (c < n) v[i] = __ldcg(qkv + (i64) g * ratio * D + c);
            }
            float kv = 0.0f, vv = 0.0f;
            if (holdsNew && (int) threadIdx.x < D) {
                kv = __ldcg(qkv + Nq + (i64) g * D + threadIdx.x);
                vv = __ldcg(qkv + Nq + Nk + (i64) g * D + threadIdx.x);
            }
#pragma unroll
            for (int i = 0; i < DL_QT; i++) {
                int c = threadIdx.x + i * DL_THREADS;
                if (c < n) qs[c] = v[i];
            }
            if (holdsNew && (int) threadIdx.x < D) {
                kn[threadIdx.x] = kv;
                vn[threadIdx.x] = vv;
            }
        }
        for (int i = threadIdx.x; i < ratio * D; i += DL_THREADS) accs[i] = 0.0f;
        if ((int) threadIdx.x < ratio) {
            mrow[threadIdx.x] = -ORBIT_INF;
            lrow[threadIdx.x] = 0.0f;
        }
        dl_csync();
        for (int r = warp; r < ratio; r += DL_WARPS) dl_head_prep(qs + r * D, D, qNorm == 0 ? (const float*) 0 : qw, eps, rot, cs, sn, half, interleaved, lane);
        if (holdsNew && warp == DL_WARPS - 1) {
            dl_head_prep(kn, D, kNorm == 0 ? (const float*) 0 : kw, eps, rot, cs, sn, half, interleaved, lane);
            for (int c = lane; c < D; c += 32) {
                float kv = kn[c];
                float vv = vn[c];
                if (slot >= 0) {
                    dl_store(kc + (i64) slot * Nk + (i64) g * D + c, kv);
                    dl_store(vc + (i64) slot * Nk + (i64) g * D + c, vv);
                }
                kn[c] = dl_round(kv, kc);
                vn[c] = dl_round(vv, vc);
            }
        }
        dl_csync();
        for (int t0 = k0; t0 < k1; t0 += DL_TK) {
            int tn = k1 - t0 < DL_TK ? k1 - t0 : DL_TK;
            if (t0 != k0) { // the first tile came before the barrier
                dl_load_tile(kt, vt, kc, vc, tables, blockSize, Nk, g, D, t0, tn, len - 1);
            }
            if (holdsNew && t0 <= len - 1 && len - 1 < t0 + tn) {
                for (int c = threadIdx.x; c < D; c += DL_THREADS) {
                    kt[(len - 1 - t0) * D + c] = kn[c];
                    vt[(len - 1 - t0) * D + c] = vn[c];
                }
            }
            dl_csync();
            for (int t = warp; t < tn; t += DL_WARPS) { // scores: a warp a key
                float kv[8];
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    int c = lane + 32 * i;
                    kv[i] = c < D ? kt[t * D + c] : 0.0f;
                }
                for (int r = 0; r < ratio; r++) {
                    float d = 0.0f;
#pragma unroll
                    for (int i = 0; i < 8; i++) {
                        int c = lane + 32 * i;
                        if (c < D) d = fmaf(qs[r * D + c], kv[i], d);
                    }
                    d = warp_sum(d);
                    if (lane == 0) sc[r * DL_TK + t] = d * scale;
                }
            }
            dl_csync();
            for (int r = warp; r < ratio; r += DL_WARPS) { // the tile's softmax terms, the running max and sum
                float m = lane < tn ? sc[r * DL_TK + lane] : -ORBIT_INF;
                m = warp_max(m);
                float mNew = fmaxf(mrow[r], m);
                float e = lane < tn ? expf(sc[r * DL_TK + lane] - mNew) : 0.0f;
                if (lane < tn) sc[r * DL_TK + lane] = e;
                float sum = warp_sum(e);
                if (lane == 0) {
                    float corr = expf(mrow[r] - mNew);
                    crow[r] = corr;
                    lrow[r] = lrow[r] * corr + sum;
                    mrow[r] = mNew;
                }
            }
            dl_csync();
#pragma unroll 1
            for (int idx = threadIdx.x; idx < ratio * D; idx += DL_THREADS) { // the running sums of (q head, dim) entries
                int r = idx / D;
                int c = idx - r * D;
                float a = accs[idx] * crow[r];
                for (int t = 0; t < tn; t++) a = fmaf(sc[r * DL_TK + t], vt[t * D + c], a);
                accs[idx] = a;
            }
            dl_csync();
        }
        // the split's partial: (max, sum, acc[D]) a q head (an empty split: -inf, 0, zeros)
        float* pp = part + (i64) b * ratio * (D + 2);
        if ((int) threadIdx.x < ratio) {
            pp[threadIdx.x * (D + 2)] = mrow[threadIdx.x];
            pp[threadIdx.x * (D + 2) + 1] = lrow[threadIdx.x];
        }
        for (int idx = threadIdx.x; idx < ratio * D; idx += DL_THREADS) pp[(idx / D) * (D + 2) + 2 + idx % D] = accs[idx];
    }
    dl_mark(trace, 4);
    dl_grid_sync(bar, 2);
    dl_mark(trace, 5);

    // P3: the splits combined, a (q head, quarter of the dims) an item: every thread's loads of the partial sums and
    // warp 0's of the maxima and sums issued together, then the weights exp(m_s - max), then the sums over the splits.
    {
        int dq = D / 4;                   // dims of an item
        int groups = DL_THREADS / dq;     // split groups: thread t takes dim t % dq of splits t / dq, + groups, ..
        float* part4 = aux;               // [groups][dq]: the groups' sums
        for (int it = b; it < 4 * Hq; it += G) {
            int hq = it / 4;
            int c0 = (it % 4) * dq;
            int gg = hq / ratio;
            int r = hq % ratio;
            const float* p0 = part + ((i64) gg * splits * ratio + r) * (D + 2); // split s at p0 + s * ratio * (D + 2)
            i64 stride = (i64) ratio * (D + 2);
            int c = (int) threadIdx.x % dq;
            int grp = (int) threadIdx.x / dq;
            float av[8];
#pragma unroll
            for (int k = 0; k < 8; k++) {
                int sp = grp + k * groups;
                av[k] = grp < groups && sp < splits ? __ldcg(p0 + sp * stride + 2 + c0 + c) : 0.0f;
            }
            if (warp == 0) {
                float ms[DL_MAX_SPLITS / 32], ls[DL_MAX_SPLITS / 32];
#pragma unroll
                for (int k = 0; k < DL_MAX_SPLITS / 32; k++) {
                    int sp = lane + 32 * k;
                    ms[k] = sp < splits ? __ldcg(p0 + sp * stride) : -ORBIT_INF;
                    ls[k] = sp < splits ? __ldcg(p0 + sp * stride + 1) : 0.0f;
                }
                float m = -ORBIT_INF;
#pragma unroll
                for (int k = 0; k < DL_MAX_SPLITS / 32; k++) m = fmaxf(m, ms[k]);
                m = warp_max(m);
                float l = 0.0f;
#pragma unroll
                for (int k = 0; k < DL_MAX_SPLITS / 32; k++) {
                    int sp = lane + 32 * k;
                    float f = ms[k] == -ORBIT_INF ? 0.0f : expf(ms[k] - m); // an empty split weighs nothing
                    if (sp < splits) fw[sp] = f;
                    l = fmaf(f, ls[k], l);
                }
                l = warp_sum(l);
                if (lane == 0) sh[0] = l;
            }
            dl_csync();
            if (grp < groups) {
                float a = 0.0f;
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    int sp = grp + k * groups;
                    if (sp < splits) a = fmaf(fw[sp], av[k], a);
                }
                for (int sp = grp + 8 * groups; sp < splits; sp += groups) a = fmaf(fw[sp], __ldcg(p0 + sp * stride + 2 + c0 + c), a);
                part4[grp * dq + c] = a;
            }
            dl_csync();
            if ((int) threadIdx.x < dq) {
                float a = 0.0f;
                for (int g2 = 0; g2 < groups; g2++) a += part4[g2 * dq + threadIdx.x];
                attn[(i64) hq * D + c0 + threadIdx.x] = a / sh[0];
            }
            dl_csync();
        }
    }
    dl_mark(trace, 6);
    dl_grid_sync(bar, 3);
    dl_mark(trace, 7);

    // P4: out = x + attn · Woᵀ over the block's rows.
    dl_stage(aux, attn, Nq);
    for (int r = olo + warp; r < ohi; r += DL_WARPS) {
        dl_wait(&bars[16 + (r - olo) / ocr]);
        float a = dl_row_bf16((const uint4*) (ring + (i64) (r - olo) * oBytes), Nq, aux, lane);
        if (lane == 0) out[r] = x[r] + a;
    }
    dl_mark(trace, 8);
    dl_grid_sync(bar, 4);
    dl_mark(trace, 9);

    // P5: h2 and the block's router rows.
    dl_norm(out, postNorm, normBf16, eps, H, h, sh);
    if (warp < 2 && b + warp * G < E) {
        dl_wait(&bars[30 + warp]);
        float v = dl_row_bf16((const uint4*) (ring + routerAt + warp * rowBytes), H, h, lane);
        if (lane == 0) logits[b + warp * G] = v;
    }
    dl_mark(trace, 10);
    dl_grid_sync(bar, 5);
    dl_mark(trace, 11);

    // P6: the top-k (every block alike), the producer told, then the gate and up rows of the block's pairs.
    dl_stage(aux, logits, E);
    if (warp == 0) {
        router_select_warp(aux, E, topk, normalize, swt, sid);
        if (lane == 0) {
            int okAll = 1;
            for (int j = 0; j < topk; j++) {
                if (sid[j] < 0 || sid[j] >= E) { // no expert (the logits were not numbers): nothing more is computed
                    if (b == 0) report_error(err, ERR_EXPERT_OUT_OF_RANGE, sid[j], j);
                    okAll = 0;
                }
            }
            expertsOk = okAll;
            __threadfence_block();
            stage = 2;
        }
    }
    dl_csync();
    dl_mark(trace, 12);
    int cBytes = H / 2;
    int sBytes = H / 16;
    int dcBytes = I / 2;
    int dsBytes = I / 16;
    int dOff[DL_MAX_TOPK][2];
    if (expertsOk) {
        dl_expert_plan(gc, gs, uc, us, dc, ds, sid, topk, H, I, plo, phi, dlo, dhi,
                       [&](int c, int begin, int end, const char**, const u32*, const u32*, const int* offs, int) {
                           if (c >= 48) {
#pragma unroll
                               for (int j = 0; j < DL_MAX_TOPK; j++) {
                                   if (j == c - 48) {
                                       dOff[j][0] = offs[0];
                                       dOff[j][1] = offs[1];
                                   }
                               }
                               return;
                           }
                           int first = begin + (((warp - (begin - plo)) % DL_WARPS) + DL_WARPS) % DL_WARPS;
                           if (first < end) dl_wait(&bars[c]);
                           for (int pr = first; pr < end; pr += DL_WARPS) {
                               int k = pr - begin;
                               float gv = dl_row_int4((const u32*) (ring + offs[0] + k * cBytes), (const u16*) (ring + offs[2] + k * sBytes),
                                                      H, h, lane);
                               float uv = dl_row_int4((const u32*) (ring + offs[1] + k * cBytes), (const u16*) (ring + offs[3] + k * sBytes),
                                                      H, h, lane);
                               if (lane == 0) act[pr] = gv / (1.0f + expf(-gv)) * uv; // swiglu_f32's expression
                           }
                       });
    }
    dl_mark(trace, 13);
    dl_grid_sync(bar, 6);
    dl_mark(trace, 14);

    // P7: the down rows [dlo, dhi) of every routed expert, weighted into out in expert order.
    dl_stage(aux, act, P);
    if (expertsOk) {
        int rows = dhi - dlo;
        for (int item = warp; item < rows * topk; item += DL_WARPS) {
            int n = item / topk;
            int j = item - n * topk;
            int oc = 0, os = 0;
#pragma unroll
            for (int jj = 0; jj < DL_MAX_TOPK; jj++) {
                if (jj == j) {
                    oc = dOff[jj][0];
                    os = dOff[jj][1];
                }
            }
            dl_wait(&bars[48 + j]);
            float a = dl_row_int4((const u32*) (ring + oc + n * dcBytes), (const u16*) (ring + os + n * dsBytes), I, aux + j * I, lane);
            if (lane == 0) red[j][n] = a;
        }
        dl_csync();
        for (int n = threadIdx.x; n < rows; n += DL_THREADS) {
            float v = 0.0f;
            for (int j = 0; j < topk; j++) v = fmaf(swt[j], red[j][n], v);
            out[dlo + n] += v;
        }
    }
    dl_mark(trace, 15);
    // The last block out re-arms the barrier for the next launch.
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(bar + 1, 1u) == gridDim.x - 1) {
            bar[0] = 0u;
            bar[1] = 0u;
        }
    }
}

extern "C" __global__ void __launch_bounds__(DL_BLOCK, 1) decode_layer_f32(DL_ARGS(float)) {
    ORBIT_TRACE_KERNEL();
    decode_layer<float>(x, out, inNorm, postNorm, normBf16, eps, wq, wk, wv, wo, qNorm, kNorm, headNormBf16, cosT, sinT, half, interleaved,
                        maxPos, pos, kc, vc, slots, tables, maxBlocks, lens, blockSize, scale, router, E, topk, normalize, gc, gs, uc, us,
                        dc, ds, H, Hq, Hkv, D, I, splits, qkv, part, attn, logits, act, bar, err, ringBytes, trace);
}

extern "C" __global__ void __launch_bounds__(DL_BLOCK, 1) decode_layer_kvbf16(DL_ARGS(u16)) {
    ORBIT_TRACE_KERNEL();
    decode_layer<u16>(x, out, inNorm, postNorm, normBf16, eps, wq, wk, wv, wo, qNorm, kNorm, headNormBf16, cosT, sinT, half, interleaved,
                      maxPos, pos, kc, vc, slots, tables, maxBlocks, lens, blockSize, scale, router, E, topk, normalize, gc, gs, uc, us,
                      dc, ds, H, Hq, Hkv, D, I, splits, qkv, part, attn, logits, act, bar, err, ringBytes, trace);
}
