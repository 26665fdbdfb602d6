// Rotary position embedding in place on x [T, H, D] (last dimension contiguous; T and H strides
// given in elements). Rotates the first 2*half channels of each head; pairs (j, j+half) for the
// HALF style, (2j, 2j+1) for INTERLEAVED. cos/sin tables are [maxPos, half].
extern "C" __global__ void rope_f32(float* x, i64 strideT, i64 strideH, int T, int H, int half, int interleaved,
                                    const void* pos, int posI64, const float* cosT, const float* sinT, int maxPos,
                                    int* err) {
    ORBIT_TRACE_KERNEL();
    i64 total = (i64) T * H * half;
    GRID_STRIDE(idx, total) {
        int j = (int) (idx % half);
        i64 th = idx / half;
        int h = (int) (th % H);
        int t = (int) (th / H);
        i64 p = posI64 ? ((const i64*) pos)[t] : (i64) ((const int*) pos)[t];
        if (p < 0 || p >= maxPos) {
            report_error(err, ERR_POSITION_OUT_OF_RANGE, p, t);
            continue;
        }
        float* v = x + (i64) t * strideT + (i64) h * strideH;
        int a = interleaved ? 2 * j : j;
        int b = interleaved ? 2 * j + 1 : j + half;
        float c = cosT[p * half + j];
        float s = sinT[p * half + j];
        float x1 = v[a];
        float x2 = v[b];
        v[a] = x1 * c - x2 * s;
        v[b] = x2 * c + x1 * s;
    }
}
