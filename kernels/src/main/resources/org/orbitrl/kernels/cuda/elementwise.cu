// Elementwise f32 operations and dtype conversions. All take n elements, grid-stride loops.

extern "C" __global__ void add_f32(const float* a, const float* b, float* out, i64 n) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) { out[i] = a[i] + b[i]; }
}

extern "C" __global__ void mul_f32(const float* a, const float* b, float* out, i64 n) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) { out[i] = a[i] * b[i]; }
}

extern "C" __global__ void scale_f32(const float* x, float alpha, float* out, i64 n) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) { out[i] = x[i] * alpha; }
}

extern "C" __global__ void silu_f32(const float* x, float* out, i64 n) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) {
        float v = x[i];
        out[i] = v / (1.0f + expf(-v));
    }
}

extern "C" __global__ void swiglu_f32(const float* gate, const float* up, float* out, i64 n) {
    ORBIT_TRACE_KERNEL();
    pdl_enter();
    GRID_STRIDE(i, n) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

extern "C" __global__ void f32_to_bf16(const float* x, u16* out, i64 n) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) { out[i] = f32_to_bf16_bits(x[i]); }
}

// n4 groups of 4: x and out 16- and 8-byte aligned.
extern "C" __global__ void f32_to_bf16_x4(const float4* x, uint2* out, i64 n4) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n4) {
        float4 v = x[i];
        uint2 o;
        o.x = (u32) f32_to_bf16_bits(v.x) | ((u32) f32_to_bf16_bits(v.y) << 16);
        o.y = (u32) f32_to_bf16_bits(v.z) | ((u32) f32_to_bf16_bits(v.w) << 16);
        out[i] = o;
    }
}

extern "C" __global__ void bf16_to_f32_kernel(const u16* x, float* out, i64 n) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) { out[i] = bf16_to_f32(x[i]); }
}

// x f32 [n] as two bf16 parts: hi = x rounded to bf16 (nearest even), lo = (x - hi) rounded likewise; hi + lo is x to
// within 2^-18 |x| (the products of full-precision rows through bf16 tensor cores, CudaMatmulOps.matmulF32).
extern "C" __global__ void split_bf16_f32(const float* x, u16* hi, u16* lo, i64 n) {
    ORBIT_TRACE_KERNEL();
    GRID_STRIDE(i, n) {
        float v = x[i];
        u16 h = f32_to_bf16_bits(v);
        hi[i] = h;
        lo[i] = f32_to_bf16_bits(v - bf16_to_f32(h));
    }
}
