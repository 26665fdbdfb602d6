// Strided copies between views, gpt-oss's clamped SwiGLU on an interleaved gate_up, and DeepSeek V4's SwiGLU with its
// limit on separate gate and up.

// dst = src for a view of up to 4 dimensions [n0, n1, n2, n3] (leading ones padded with size 1), strides in units of T,
// n = n0·n1·n2·n3 units. I: the index type, u32 where n fits 32 bits (its divisions a few instructions where a 64-bit
// division takes a routine), else i64. T: u32 (4-byte elements) or uint4 (16 bytes: four elements of a last dimension
// contiguous on both sides, every stride and both addresses in whole units).
template <typename T, typename I>
__device__ __forceinline__ void strided_copy(const T* src, T* dst, I n, I n1, I n2, I n3, i64 s0, i64 s1, i64 s2, i64 s3, i64 d0,
                                             i64 d1, i64 d2, i64 d3) {
    for (I i = (I) blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I) gridDim.x * blockDim.x) {
        I r = i;
        I i3 = r % n3;
        r /= n3;
        I i2 = r % n2;
        r /= n2;
        I i1 = r % n1;
        I i0 = r / n1;
        dst[i0 * d0 + i1 * d1 + i2 * d2 + i3 * d3] = src[i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3];
    }
}

extern "C" __global__ void strided_copy_u32(const u32* src, u32* dst, i64 n, i64 n1, i64 n2, i64 n3,
                                            i64 s0, i64 s1, i64 s2, i64 s3, i64 d0, i64 d1, i64 d2, i64 d3) {
    ORBIT_TRACE_KERNEL();
    strided_copy<u32, i64>(src, dst, n, n1, n2, n3, s0, s1, s2, s3, d0, d1, d2, d3);
}

extern "C" __global__ void strided_copy_u32_i32(const u32* src, u32* dst, u32 n, u32 n1, u32 n2, u32 n3, i64 s0, i64 s1, i64 s2,
                                                i64 s3, i64 d0, i64 d1, i64 d2, i64 d3) {
    ORBIT_TRACE_KERNEL();
    strided_copy<u32, u32>(src, dst, n, n1, n2, n3, s0, s1, s2, s3, d0, d1, d2, d3);
}

extern "C" __global__ void strided_copy_u32x4_i32(const uint4* src, uint4* dst, u32 n, u32 n1, u32 n2, u32 n3, i64 s0, i64 s1,
                                                  i64 s2, i64 s3, i64 d0, i64 d1, i64 d2, i64 d3) {
    ORBIT_TRACE_KERNEL();
    strided_copy<uint4, u32>(src, dst, n, n1, n2, n3, s0, s1, s2, s3, d0, d1, d2, d3);
}

// gu [rows, 2I] (gate 2j, up 2j+1) -> out [rows, I]; n = rows·I.
extern "C" __global__ void clamped_swiglu_f32(const float* gu, float* out, i64 n, float alpha, float limit) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) {
        float gate = gu[2 * i];
        float up = gu[2 * i + 1];
        float g = fminf(gate, limit);
        float u = fmaxf(-limit, fminf(up, limit));
        out[i] = (u + 1.0f) * (g / (1.0f + expf(-alpha * g)));
    }
}

// d out [rows, I] -> d gu [rows, 2I]; zero where the forward clamped the input.
extern "C" __global__ void clamped_swiglu_backward_f32(const float* gu, const float* dout, float* dgu, i64 n,
                                                       float alpha, float limit) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) {
        float gate = gu[2 * i];
        float up = gu[2 * i + 1];
        float g = fminf(gate, limit);
        float u = fmaxf(-limit, fminf(up, limit));
        float s = 1.0f / (1.0f + expf(-alpha * g));
        float d = dout[i];
        dgu[2 * i] = gate <= limit ? d * (u + 1.0f) * (s + alpha * g * s * (1.0f - s)) : 0.0f;
        dgu[2 * i + 1] = (up >= -limit && up <= limit) ? d * (g * s) : 0.0f;
    }
}

// DeepSeek V4: out = silu(min(g, limit)) * clamp(u, -limit, limit); n elements of one shape.
extern "C" __global__ void limited_swiglu_f32(const float* gate, const float* up, float* out, i64 n, float limit) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) {
        float g = fminf(gate[i], limit);
        float u = fmaxf(-limit, fminf(up[i], limit));
        out[i] = g / (1.0f + expf(-g)) * u;
    }
}

// Its backward: zero where the input lay on or beyond its clamp (the host's strict bounds).
extern "C" __global__ void limited_swiglu_backward_f32(const float* gate, const float* up, const float* dout,
                                                       float* dgate, float* dup, i64 n, float limit) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) {
        float gi = gate[i];
        float ui = up[i];
        float g = fminf(gi, limit);
        float u = fmaxf(-limit, fminf(ui, limit));
        float s = 1.0f / (1.0f + expf(-g));
        float d = dout[i];
        dgate[i] = gi < limit ? d * u * (s * (1.0f + g * (1.0f - s))) : 0.0f;
        dup[i] = (ui > -limit && ui < limit) ? d * (g * s) : 0.0f;
    }
}

// Spans of 4-byte elements copied through a table of (source address, destination address, elements) triples, a block a
// span: the rows a decode step appends to each sequence's state, the kept rows of its closing windows gathered for one
// read back. 16-byte moves where both spans
// are 16-byte aligned and the count a multiple of 4, else 4-byte ones.
extern "C" __global__ void copy_spans_u32(const long long* table, int n) {
    ORBIT_TRACE_KERNEL();
    int i = blockIdx.x;
    if (i >= n) return;
    long long s = table[3 * i];
    long long d = table[3 * i + 1];
    long long e = table[3 * i + 2];
    if (((s | d) & 15) == 0 && (e & 3) == 0) {
        const uint4* src = (const uint4*) s;
        uint4* dst = (uint4*) d;
        for (long long c = threadIdx.x; c < e / 4; c += blockDim.x) dst[c] = src[c];
    } else {
        const u32* src = (const u32*) s;
        u32* dst = (u32*) d;
        for (long long c = threadIdx.x; c < e; c += blockDim.x) dst[c] = src[c];
    }
}
