// OFT rotation blocks from their packed skew parameters, their backward and the coft projection
// (the algorithms of the host's OftOps, in double precision). One thread block per stored block;
// its b x b work matrices live in dynamic shared memory when they fit (useShared), else in a global
// workspace of `mats` matrices per stored block. Nothing is read back to the host.
#define OFT_THREADS 256

// Index of the pair i < j in the row-major strict upper triangle of a b x b block.
__device__ __forceinline__ int oft_pair(int i, int j, int b) {
    return i * b - i * (i + 1) / 2 + (j - i - 1);
}

// The pair (i, j), i < j, of index k (the inverse of oft_pair).
__device__ __forceinline__ void oft_unpair(int k, int b, int* i, int* j) {
    int r = 0;
    while (k >= b - 1 - r) {
        k -= b - 1 - r;
        r++;
    }
    *i = r;
    *j = r + 1 + k;
}

// Q[i, j] of the skew matrix whose strict upper triangle is v.
__device__ __forceinline__ double oft_q(const float* v, int i, int j, int b) {
    if (i == j) return 0.0;
    return i < j ? (double) v[oft_pair(i, j, b)] : -(double) v[oft_pair(j, i, b)];
}

__device__ __forceinline__ int oft_degree(int terms) {
    return terms <= 1 ? 0 : terms == 2 ? 1 : max(terms - 1, 3);
}

// c_k of the Cayley-Neumann polynomial (PEFT's loop): 1, 2, 2, ..., 2, 1.
__device__ __forceinline__ double oft_coef(int k, int terms) {
    int d = oft_degree(terms);
    if (k == 0) return 1.0;
    if (k > d) return 0.0;
    return (k == d && terms > 2) ? 1.0 : 2.0;
}

// The work matrices of this thread block.
__device__ __forceinline__ double* oft_work(double* workspace, int useShared, int mats, int b) {
    extern __shared__ double oft_shared[];
    return useShared ? oft_shared : workspace + (i64) blockIdx.x * ((i64) mats * b * b + b);
}

// a <- a^{-1} in place by Gauss-Jordan without pivoting (A = I + Q: every pivot is at least 1).
// col: b doubles of scratch.
__device__ void oft_inverse(double* a, double* col, int b) {
    int n = b * b;
    for (int k = 0; k < b; k++) {
        for (int i = threadIdx.x; i < b; i += blockDim.x) col[i] = a[i * b + k];
        __syncthreads();
        double inv = 1.0 / col[k];
        for (int j = threadIdx.x; j < b; j += blockDim.x) a[k * b + j] = (j == k ? 1.0 : a[k * b + j]) * inv;
        __syncthreads();
        for (int e = threadIdx.x; e < n; e += blockDim.x) {
            int i = e / b;
            int j = e - i * b;
            if (i != k) a[e] = (j == k ? 0.0 : a[e]) - col[i] * a[k * b + j];
        }
        __syncthreads();
    }
}

// out = x . y (+ c I), all b x b; out distinct from x and y.
__device__ void oft_mul(const double* x, const double* y, double* out, double c, int b) {
    int n = b * b;
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        int i = e / b;
        int j = e - i * b;
        double s = i == j ? c : 0.0;
        for (int l = 0; l < b; l++) s += x[i * b + l] * y[l * b + j];
        out[e] = s;
    }
    __syncthreads();
}

// rotationT [stored, b, b] = R_j^T from param [stored, b(b-1)/2]; terms 0: exact Cayley map.
// Work: 1 matrix + b (exact), 3 matrices + b (series).
extern "C" __global__ void oft_rotation(const float* param, int b, int terms, float* rotationT, double* workspace,
                                        int useShared) {
    ORBIT_TRACE_KERNEL();
    int mats = terms == 0 ? 1 : 3;
    double* w = oft_work(workspace, useShared, mats, b);
    int n = b * b;
    const float* v = param + (i64) blockIdx.x * (b * (b - 1) / 2);
    float* out = rotationT + (i64) blockIdx.x * n;
    if (terms == 0) {
        double* col = w + n;
        for (int e = threadIdx.x; e < n; e += blockDim.x) {
            int i = e / b;
            int j = e - i * b;
            w[e] = (i == j ? 1.0 : 0.0) + oft_q(v, i, j, b);
        }
        __syncthreads();
        oft_inverse(w, col, b);
        for (int e = threadIdx.x; e < n; e += blockDim.x) {
            int k = e / b;
            int c = e - k * b;
            out[c * b + k] = (float) (2.0 * w[e] - (k == c ? 1.0 : 0.0));
        }
        return;
    }
    double* q = w;
    double* p = w + n;
    double* t = w + 2 * n;
    int d = oft_degree(terms);
    double cd = oft_coef(d, terms);
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        int i = e / b;
        int j = e - i * b;
        q[e] = oft_q(v, i, j, b);
        p[e] = i == j ? cd : 0.0;
    }
    __syncthreads();
    for (int k = d - 1; k >= 0; k--) {   // P <- Q.P + c_k I
        oft_mul(q, p, t, oft_coef(k, terms), b);
        double* s = p;
        p = t;
        t = s;
    }
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        int k = e / b;
        int c = e - k * b;
        out[c * b + k] = (float) p[e];
    }
}

// grad [stored, b(b-1)/2] += dL/dparam from dR [stored, b, b] = dL/dR_j.
// Work: 2 matrices + b (exact), 5 matrices + b (series).
extern "C" __global__ void oft_rotation_backward(const float* param, const float* dR, int b, int terms, float* grad,
                                                 double* workspace, int useShared) {
    ORBIT_TRACE_KERNEL();
    int mats = terms == 0 ? 2 : 5;
    double* w = oft_work(workspace, useShared, mats, b);
    int n = b * b;
    int np = b * (b - 1) / 2;
    const float* v = param + (i64) blockIdx.x * np;
    const float* g = dR + (i64) blockIdx.x * n;
    float* gv = grad + (i64) blockIdx.x * np;
    if (terms == 0) {
        double* ai = w;
        double* t = w + n;
        double* col = w + 2 * n;
        for (int e = threadIdx.x; e < n; e += blockDim.x) {
            int i = e / b;
            int j = e - i * b;
            ai[e] = (i == j ? 1.0 : 0.0) + oft_q(v, i, j, b);
        }
        __syncthreads();
        oft_inverse(ai, col, b);
        for (int e = threadIdx.x; e < n; e += blockDim.x) {   // T = A^-T . G
            int i = e / b;
            int j = e - i * b;
            double s = 0.0;
            for (int l = 0; l < b; l++) s += ai[l * b + i] * (double) g[l * b + j];
            t[e] = s;
        }
        __syncthreads();
        // Pairs directly: dQ[i, j] - dQ[j, i] with dQ = -2 T . A^-T.
        for (int k = threadIdx.x; k < np; k += blockDim.x) {
            int i;
            int j;
            oft_unpair(k, b, &i, &j);
            double sij = 0.0;
            double sji = 0.0;
            for (int l = 0; l < b; l++) {
                sij += t[i * b + l] * ai[j * b + l];
                sji += t[j * b + l] * ai[i * b + l];
            }
            gv[k] += (float) (-2.0 * (sij - sji));
        }
        return;
    }
    double* m = w;            // Q^T = -Q
    double* s = w + n;        // S_k
    double* mp = w + 2 * n;   // (Q^T)^k
    double* acc = w + 3 * n;  // dL/dQ
    double* t = w + 4 * n;
    int d = oft_degree(terms);
    double c1 = oft_coef(1, terms);
    for (int e = threadIdx.x; e < n; e += blockDim.x) {
        int i = e / b;
        int j = e - i * b;
        double mij = -oft_q(v, i, j, b);
        m[e] = mij;
        mp[e] = mij;
        s[e] = (double) g[e];
        acc[e] = d >= 1 ? c1 * (double) g[e] : 0.0;
    }
    __syncthreads();
    for (int k = 1; k < d; k++) {
        for (int e = threadIdx.x; e < n; e += blockDim.x) {   // T = M.S + G.M^k
            int i = e / b;
            int j = e - i * b;
            double x = 0.0;
            for (int l = 0; l < b; l++) x += m[i * b + l] * s[l * b + j] + (double) g[i * b + l] * mp[l * b + j];
            t[e] = x;
        }
        __syncthreads();
        double* sw = s;
        s = t;
        t = sw;
        double ck = oft_coef(k + 1, terms);
        for (int e = threadIdx.x; e < n; e += blockDim.x) acc[e] += ck * s[e];
        __syncthreads();
        if (k + 1 < d) {
            oft_mul(mp, m, t, 0.0, b);
            sw = mp;
            mp = t;
            t = sw;
        }
    }
    for (int k = threadIdx.x; k < np; k += blockDim.x) {
        int i;
        int j;
        oft_unpair(k, b, &i, &j);
        gv[k] += (float) (acc[i * b + j] - acc[j * b + i]);
    }
}

// coft, in place per stored block: ||Q||_F = sqrt(2 sum v^2) (double, fixed tree); above radius,
// v <- radius (v / ||Q||_F). One block of OFT_THREADS per row of n values.
extern "C" __global__ void oft_project(float* param, int n, double radius) {
    ORBIT_TRACE_KERNEL();
    __shared__ double sh[OFT_THREADS];
    float* v = param + (i64) blockIdx.x * n;
    double ss = 0.0;
    for (int k = threadIdx.x; k < n; k += blockDim.x) ss += (double) v[k] * (double) v[k];
    sh[threadIdx.x] = ss;
    __syncthreads();
    for (int s = OFT_THREADS / 2; s > 0; s >>= 1) {
        if ((int) threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double norm = sqrt(2.0 * sh[0]);
    if (norm > radius) {
        for (int k = threadIdx.x; k < n; k += blockDim.x) v[k] = (float) (radius * ((double) v[k] / norm));
    }
}

// y [rows, in] = x . R blockwise (slice i of a row times R_i, or R_0 for one stored block) from
// rotationT [stored, b, b] = R_j^T; transposed: x . R^T blockwise. One thread per output, an f32
// sum over the slice in ascending order without fused multiply-adds (the host's OftOps.rotate).
extern "C" __global__ void oft_rotate(const float* x, const float* rotationT, float* y, i64 total, int in, int b,
                                      int stored, int transposed) {
    ORBIT_TRACE_KERNEL();
    for (i64 idx = (i64) blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += (i64) gridDim.x * blockDim.x) {
        int col = (int) (idx % in);
        int i = col / b;
        int e = col - i * b;
        const float* xs = x + (idx - e);
        const float* r = rotationT + (i64) (stored == 1 ? 0 : i) * b * b;
        float acc = 0.0f;
        if (transposed) {
            for (int l = 0; l < b; l++) acc = __fadd_rn(acc, __fmul_rn(xs[l], r[l * b + e]));
        } else {
            for (int l = 0; l < b; l++) acc = __fadd_rn(acc, __fmul_rn(xs[l], r[e * b + l]));
        }
        y[idx] = acc;
    }
}
