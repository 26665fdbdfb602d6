// StreamProbe's kernels: every block reads perBlock bytes of its own region of src into shared memory (or registers),
// three ways: bulk copies issued by one thread (cp.async.bulk, completion on an mbarrier), 16-byte cp.async by every
// thread, and 16-byte loads into registers, eight a thread in flight.

__device__ __forceinline__ void sp_wait(unsigned long long* bar, u32 parity) {
    u32 done;
    do {
        asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                     : "=r"(done)
                     : "r"(smem_addr(bar)), "r"(parity)
                     : "memory");
    } while (!done);
}

extern "C" __global__ void __launch_bounds__(256, 1) probe_bulk(const char* src, i64 perBlock, int chunk, int ringBytes, u32* sink) {
    extern __shared__ __align__(128) unsigned char sm[];
    __shared__ __align__(8) unsigned long long bar;
    const char* base = src + (i64) blockIdx.x * perBlock;
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(&bar)) : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    u32 parity = 0;
    for (i64 done = 0; done < perBlock; done += ringBytes) {
        int n = (int) (perBlock - done < ringBytes ? perBlock - done : ringBytes);
        if (threadIdx.x == 0) {
            asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(&bar)), "r"(n) : "memory");
            for (int off = 0; off < n; off += chunk) {
                int c = n - off < chunk ? n - off : chunk;
                asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smem_addr(sm + off)),
                             "l"(base + done + off), "r"(c), "r"(smem_addr(&bar))
                             : "memory");
            }
        }
        sp_wait(&bar, parity);
        parity ^= 1;
        __syncthreads();
    }
    if (threadIdx.x == 0) sink[blockIdx.x] = sm[blockIdx.x % 64];
}

extern "C" __global__ void __launch_bounds__(256, 1) probe_cpasync(const char* src, i64 perBlock, int chunk, int ringBytes, u32* sink) {
    extern __shared__ __align__(128) unsigned char sm[];
    const char* base = src + (i64) blockIdx.x * perBlock;
    for (i64 done = 0; done < perBlock; done += ringBytes) {
        int n = (int) (perBlock - done < ringBytes ? perBlock - done : ringBytes);
        for (int off = threadIdx.x * 16; off < n; off += 256 * 16) cp_async16_zfill(smem_addr(sm + off), base + done + off, true);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
    }
    if (threadIdx.x == 0) sink[blockIdx.x] = sm[blockIdx.x % 64];
}

extern "C" __global__ void __launch_bounds__(256, 1) probe_ld(const char* src, i64 perBlock, int chunk, int ringBytes, u32* sink) {
    const uint4* base = (const uint4*) (src + (i64) blockIdx.x * perBlock);
    i64 n = perBlock / 16;
    u32 acc = 0;
    for (i64 i0 = threadIdx.x; i0 < n; i0 += 256 * 8) {
        uint4 v[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            i64 i = i0 + k * 256;
            if (i < n) v[k] = __ldg(base + i);
        }
#pragma unroll
        for (int k = 0; k < 8; k++) {
            i64 i = i0 + k * 256;
            if (i < n) acc ^= v[k].x ^ v[k].y ^ v[k].z ^ v[k].w;
        }
    }
    if (acc == 0x12345678u) sink[blockIdx.x] = acc;
}
