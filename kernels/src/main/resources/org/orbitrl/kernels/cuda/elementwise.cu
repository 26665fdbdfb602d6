// Elementwise f32 operations and dtype conversions. All take n elements, grid-stride loops.

extern "C" __global__ void add_f32(const float* a, const float* b, float* out, i64 n) {
    GRID_STRIDE(i, n) { out[i] = a[i] + b[i]; }
}

extern "C" __global__ void mul_f32(const float* a, const float* b, float* out, i64 n) {
    GRID_STRIDE(i, n) { out[i] = a[i] * b[i]; }
}

extern "C" __global__ void scale_f32(const float* x, float alpha, float* out, i64 n) {
    GRID_STRIDE(i, n) { out[i] = x[i] * alpha; }
}

extern "C" __global__ void silu_f32(const float* x, float* out, i64 n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        out[i] = v / (1.0f + expf(-v));
    }
}

extern "C" __global__ void swiglu_f32(const float* gate, const float* up, float* out, i64 n) {
    GRID_STRIDE(i, n) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

extern "C" __global__ void f32_to_bf16(const float* x, u16* out, i64 n) {
    GRID_STRIDE(i, n) { out[i] = f32_to_bf16_bits(x[i]); }
}

extern "C" __global__ void bf16_to_f32_kernel(const u16* x, float* out, i64 n) {
    GRID_STRIDE(i, n) { out[i] = bf16_to_f32(x[i]); }
}
