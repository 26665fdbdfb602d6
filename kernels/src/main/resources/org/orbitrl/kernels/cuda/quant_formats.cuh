// Quantized weights [N, K], K a multiple of 32. Codes are 4-bit, two per byte, the even element in
// the low nibble; a row holds K/2 bytes (the compressed-tensors int32 words [N, K/8] are the same
// bytes). Layouts as the format classes of org.orbitrl.kernels.quant document them:
//   FMT_INT4  int4-g32 / int4-g32-asym: w = (u - z) * scale[n, k/32], u the stored nibble, scales bf16;
//             z = 8 when symmetric (zeros null), else the nibble at bits 4*(n%8) of zeros[n/8, k/32]
//   FMT_MXFP4 mxfp4: w = e2m1(u) * 2^(scale[n, k/32] - 127), scales u8 (E8M0; 255 is NaN)
//   FMT_NVFP4 nvfp4: w = e2m1(u) * (e4m3(scale[n, k/16]) / global), scales E4M3, global a divisor
// Dot products are taken on the unscaled codes and multiplied by the scale once per group.

#define FMT_INT4 0
#define FMT_MXFP4 1
#define FMT_NVFP4 2

__device__ __forceinline__ float e2m1(u32 nib) {
    u32 mag = nib & 7u;
    float v = mag < 2u ? 0.5f * (float) mag : __uint_as_float(((mag >> 1) + 126u) << 23) * (1.0f + 0.5f * (float) (mag & 1u));
    return (nib & 8u) ? -v : v;
}

__device__ __forceinline__ float e4m3(u32 b) {
    u32 e = (b >> 3) & 15u;
    u32 m = b & 7u;
    float v;
    if (e == 15u && m == 7u) {
        v = __uint_as_float(0x7fc00000u);
    } else if (e == 0u) {
        v = (float) m * 0.001953125f; // m/8 * 2^-6
    } else {
        v = __uint_as_float((e + 120u) << 23) * (1.0f + 0.125f * (float) m);
    }
    return (b & 0x80u) ? -v : v;
}

__device__ __forceinline__ float e8m0(u32 e) {
    if (e == 255u) return __uint_as_float(0x7fc00000u);
    return e == 0u ? 5.877471754111438e-39f : __uint_as_float(e << 23); // 2^-127 is subnormal
}

template <int FMT>
__device__ __forceinline__ float code_value(u32 nib, int zero) {
    if (FMT == FMT_INT4) return (float) ((int) nib - zero);
    return e2m1(nib);
}

// The stored zero nibble of group g of row n (INT4; 8 when symmetric).
__device__ __forceinline__ int zero_nibble(const u32* zeros, i64 n, int g, int K) {
    if (zeros == 0) return 8;
    return (int) ((zeros[(n >> 3) * (K / 32) + g] >> (4 * (int) (n & 7))) & 15u);
}
