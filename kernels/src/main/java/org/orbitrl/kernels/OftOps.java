package org.orbitrl.kernels;

/**
 * OFT's rotation blocks from their packed parameters: the host implementation of
 * {@link Backend#oftRotation}, {@link Backend#oftRotationBackward} and {@link Backend#oftProject},
 * and the reference of the device kernels ({@code oft.cu}), which run the same algorithms.
 *
 * <p>Conventions (PEFT 0.21's {@code OFTRotationModule}): a stored block's parameter row v holds
 * b(b−1)/2 values, Q[i, j] = v[k] for the k-th pair i &lt; j in row-major order and Q = U − Uᵀ.
 * The exact map is R = (I − Q)(I + Q)⁻¹ = 2(I + Q)⁻¹ − I; the Cayley-Neumann series with T terms is
 * R = Σ_k c_k Q^k with c = 1, 2, 2, …, 2, 1 up to degree max(T − 1, 3) (T = 2: I + 2Q), the
 * polynomial PEFT's loop builds. The rotation is written transposed, R_jᵀ, the layout in which
 * {@link Backend#matmul} multiplies by R.
 *
 * <p>Algorithms, per block, in double precision: (I + Q)⁻¹ by Gauss-Jordan elimination without
 * pivoting, which is safe because the symmetric part of I + Q is I (every pivot is at least 1); the
 * series by Horner's rule; the derivatives
 * dL/dQ = −2·A⁻ᵀ·G·A⁻ᵀ (A = I + Q) for the exact map and
 * dL/dQ = Σ_k c_k Σ_{a+e=k−1} (Qᵀ)^a·G·(Qᵀ)^e for the series (summed by S_{k+1} = Qᵀ·S_k + G·(Qᵀ)^k),
 * with G = dL/dR; the parameter gradient is dL/dv_k = dL/dQ[i, j] − dL/dQ[j, i].
 */
public final class OftOps {
    private OftOps() {
    }

    /** The block size b of a packed row of {@code elements} = b(b−1)/2 values; throws if none fits. */
    public static int blockSize(long elements) {
        int b = (int) Math.round((1 + Math.sqrt(1 + 8.0 * elements)) / 2);
        if (elements < 1 || (long) b * (b - 1) / 2 != elements) {
            throw new IllegalArgumentException("an OFT parameter row of " + elements
                    + " values is not the strict upper triangle of a square block (b(b−1)/2)");
        }
        return b;
    }

    /** The degree of the Cayley-Neumann polynomial of {@code terms} terms. */
    public static int neumannDegree(int terms) {
        return terms <= 1 ? 0 : terms == 2 ? 1 : Math.max(terms - 1, 3);
    }

    /** The coefficient c_k of Q^k in the Cayley-Neumann polynomial of {@code terms} terms. */
    public static double neumannCoefficient(int k, int terms) {
        int d = neumannDegree(terms);
        if (k == 0) {
            return 1;
        }
        if (k > d) {
            return 0;
        }
        return k == d && terms > 2 ? 1 : 2;
    }

    /**
     * rotationT f32 [stored, b, b] = R_jᵀ for param f32 [stored, b(b−1)/2]: the exact Cayley map when
     * {@code neumannTerms} is 0, else the Cayley-Neumann series of that many terms. Host memory.
     */
    public static void rotation(Tensor param, int neumannTerms, Tensor rotationT) {
        int b = check("oftRotation", param, rotationT, neumannTerms);
        int stored = param.size(0);
        float[] v = param.contiguous().toFloatArray();
        float[] out = new float[stored * b * b];
        int n = b * (b - 1) / 2;
        for (int j = 0; j < stored; j++) {
            double[] q = skew(v, j * n, b);
            double[] r;
            if (neumannTerms == 0) {
                r = inverse(identityPlus(q, b), b);
                for (int i = 0; i < b * b; i++) {
                    r[i] *= 2;
                }
                for (int i = 0; i < b; i++) {
                    r[i * b + i] -= 1;
                }
            } else {
                int d = neumannDegree(neumannTerms);
                r = scaledIdentity(neumannCoefficient(d, neumannTerms), b);
                for (int k = d - 1; k >= 0; k--) {
                    double[] t = mul(q, r, b);
                    for (int i = 0; i < b; i++) {
                        t[i * b + i] += neumannCoefficient(k, neumannTerms);
                    }
                    r = t;
                }
            }
            for (int k = 0; k < b; k++) {
                for (int c = 0; c < b; c++) {
                    out[j * b * b + c * b + k] = (float) r[k * b + c];
                }
            }
        }
        rotationT.copyFrom(Tensor.of(out, rotationT.shape()));
    }

    /**
     * Accumulates into grad f32 [stored, b(b−1)/2] the parameter gradient from dRotation f32
     * [stored, b, b] = dL/dR_j (R itself, not transposed) through the map {@link #rotation} builds.
     */
    public static void rotationBackward(Tensor param, Tensor dRotation, int neumannTerms, Tensor grad) {
        int b = check("oftRotationBackward", param, dRotation, neumannTerms);
        if (!java.util.Arrays.equals(grad.shape(), param.shape()) || grad.dtype() != DType.F32) {
            throw new IllegalArgumentException("oftRotationBackward: grad " + grad + " must be f32 of param's shape " + param);
        }
        int stored = param.size(0);
        int n = b * (b - 1) / 2;
        float[] v = param.contiguous().toFloatArray();
        float[] dr = dRotation.contiguous().toFloatArray();
        float[] g = grad.contiguous().toFloatArray();
        for (int j = 0; j < stored; j++) {
            double[] q = skew(v, j * n, b);
            double[] gj = new double[b * b];
            for (int i = 0; i < b * b; i++) {
                gj[i] = dr[j * b * b + i];
            }
            double[] dq = neumannTerms == 0 ? cayleyBackward(q, gj, b) : neumannBackward(q, gj, b, neumannTerms);
            int k = j * n;
            for (int r = 0; r < b; r++) {
                for (int c = r + 1; c < b; c++) {
                    g[k++] += (float) (dq[r * b + c] - dq[c * b + r]);
                }
            }
        }
        grad.copyFrom(Tensor.of(g, grad.shape()));
    }

    /**
     * The block-diagonal rotation of activations: y [rows, blocks·b] = x [rows, blocks·b] · R blockwise,
     * slice i of every row multiplied by R_j (j = i, or 0 with one stored block), given
     * rotationT f32 [stored, b, b] = R_jᵀ; with {@code transposed}, by R_jᵀ instead (the backward's
     * g·Rᵀ). Each output is an f32 sum over the slice in ascending order, so a row's result does not
     * depend on the other rows. Host memory; y must not overlap x.
     */
    public static void rotate(Tensor x, Tensor rotationT, boolean transposed, Tensor y) {
        int b = checkRotate(x, rotationT, y);
        int in = x.size(-1);
        int blocks = in / b;
        int stored = rotationT.size(0);
        float[] xs = x.toFloatArray();
        float[] rt = rotationT.contiguous().toFloatArray();
        float[] out = new float[xs.length];
        int rows = xs.length / in;
        for (int m = 0; m < rows; m++) {
            for (int i = 0; i < blocks; i++) {
                int base = m * in + i * b;
                int ro = (stored == 1 ? 0 : i) * b * b;
                for (int e = 0; e < b; e++) {
                    float acc = 0;
                    for (int l = 0; l < b; l++) {
                        acc += xs[base + l] * rt[ro + (transposed ? l * b + e : e * b + l)];
                    }
                    out[base + e] = acc;
                }
            }
        }
        y.copyFrom(Tensor.of(out, y.shape()));
    }

    /** Checks the operands of {@link #rotate}; returns b. */
    public static int checkRotate(Tensor x, Tensor rotationT, Tensor y) {
        if (x.dtype() != DType.F32 || !x.isContiguous() || y.dtype() != DType.F32 || !y.isContiguous()
                || !java.util.Arrays.equals(x.shape(), y.shape())) {
            throw new IllegalArgumentException("oftRotate: x " + x + " and y " + y + " must be contiguous f32 of one shape");
        }
        if (rotationT.dtype() != DType.F32 || rotationT.rank() != 3 || rotationT.size(1) != rotationT.size(2)) {
            throw new IllegalArgumentException("oftRotate: rotationT must be f32 [stored, b, b], got " + rotationT);
        }
        int b = rotationT.size(1);
        int in = x.rank() == 0 ? 0 : x.size(-1);
        int stored = rotationT.size(0);
        if (b < 1 || in % b != 0 || (stored != 1 && stored != in / b)) {
            throw new IllegalArgumentException("oftRotate: x " + x + " has rows of " + in + ", which rotationT " + rotationT
                    + " does not split into " + stored + " blocks of " + b + " (or one shared block)");
        }
        return b;
    }

    /**
     * PEFT's coft projection, in place, per stored block of param f32 [stored, b(b−1)/2]: with
     * ‖Q‖_F = sqrt(2·Σv²) (in double), if ‖Q‖_F &gt; radius then v ← radius·(v/‖Q‖_F).
     */
    public static void project(Tensor param, double radius) {
        if (param.dtype() != DType.F32 || param.rank() != 2 || !param.isContiguous()) {
            throw new IllegalArgumentException("oftProject: param must be contiguous f32 [stored, n], got " + param);
        }
        int stored = param.size(0);
        int n = param.size(1);
        float[] v = param.toFloatArray();
        boolean changed = false;
        for (int j = 0; j < stored; j++) {
            double ss = 0;
            for (int k = 0; k < n; k++) {
                ss += (double) v[j * n + k] * v[j * n + k];
            }
            double norm = Math.sqrt(2 * ss);
            if (norm > radius) {
                for (int k = 0; k < n; k++) {
                    v[j * n + k] = (float) (radius * (v[j * n + k] / norm));
                }
                changed = true;
            }
        }
        if (changed) {
            param.copyFrom(Tensor.of(v, param.shape()));
        }
    }

    private static double[] cayleyBackward(double[] q, double[] g, int b) {
        double[] ai = inverse(identityPlus(q, b), b);
        double[] ait = transpose(ai, b);
        double[] out = mul(mul(ait, g, b), ait, b);
        for (int i = 0; i < out.length; i++) {
            out[i] *= -2;
        }
        return out;
    }

    private static double[] neumannBackward(double[] q, double[] g, int b, int terms) {
        int d = neumannDegree(terms);
        double[] out = new double[b * b];
        if (d == 0) {
            return out;
        }
        double[] m = transpose(q, b);   // Qᵀ = −Q
        double[] s = g.clone();         // S_1 = G
        double[] mp = m.clone();        // (Qᵀ)^1
        axpy(neumannCoefficient(1, terms), s, out);
        for (int k = 1; k < d; k++) {
            double[] next = mul(m, s, b);
            double[] gm = mul(g, mp, b);
            for (int i = 0; i < next.length; i++) {
                next[i] += gm[i];
            }
            s = next;
            axpy(neumannCoefficient(k + 1, terms), s, out);
            mp = mul(mp, m, b);
        }
        return out;
    }

    private static int check(String op, Tensor param, Tensor rotation, int neumannTerms) {
        if (param.dtype() != DType.F32 || param.rank() != 2 || !param.isContiguous()) {
            throw new IllegalArgumentException(op + ": param must be contiguous f32 [stored, b(b−1)/2], got " + param);
        }
        int b = blockSize(param.size(1));
        if (rotation.dtype() != DType.F32 || rotation.rank() != 3 || rotation.size(0) != param.size(0)
                || rotation.size(1) != b || rotation.size(2) != b) {
            throw new IllegalArgumentException(op + ": rotation must be f32 [" + param.size(0) + ", " + b + ", " + b
                    + "] for param " + param + ", got " + rotation);
        }
        if (neumannTerms < 0) {
            throw new IllegalArgumentException(op + ": neumannTerms must be 0 (exact Cayley map) or positive, got " + neumannTerms);
        }
        return b;
    }

    private static double[] skew(float[] v, int off, int b) {
        double[] q = new double[b * b];
        int k = off;
        for (int i = 0; i < b; i++) {
            for (int j = i + 1; j < b; j++) {
                q[i * b + j] = v[k];
                q[j * b + i] = -v[k];
                k++;
            }
        }
        return q;
    }

    /** In-place Gauss-Jordan inversion without pivoting (pivots of I + Q are at least 1). */
    private static double[] inverse(double[] a, int b) {
        for (int k = 0; k < b; k++) {
            double[] col = new double[b];
            for (int i = 0; i < b; i++) {
                col[i] = a[i * b + k];
            }
            double inv = 1 / col[k];
            for (int j = 0; j < b; j++) {
                a[k * b + j] = (j == k ? 1 : a[k * b + j]) * inv;
            }
            for (int i = 0; i < b; i++) {
                if (i == k) {
                    continue;
                }
                for (int j = 0; j < b; j++) {
                    a[i * b + j] = (j == k ? 0 : a[i * b + j]) - col[i] * a[k * b + j];
                }
            }
        }
        return a;
    }

    private static double[] identityPlus(double[] q, int b) {
        double[] a = q.clone();
        for (int i = 0; i < b; i++) {
            a[i * b + i] += 1;
        }
        return a;
    }

    private static double[] scaledIdentity(double c, int b) {
        double[] a = new double[b * b];
        for (int i = 0; i < b; i++) {
            a[i * b + i] = c;
        }
        return a;
    }

    private static double[] mul(double[] x, double[] y, int b) {
        double[] out = new double[b * b];
        for (int i = 0; i < b; i++) {
            for (int j = 0; j < b; j++) {
                double s = 0;
                for (int l = 0; l < b; l++) {
                    s += x[i * b + l] * y[l * b + j];
                }
                out[i * b + j] = s;
            }
        }
        return out;
    }

    private static double[] transpose(double[] x, int b) {
        double[] out = new double[b * b];
        for (int i = 0; i < b; i++) {
            for (int j = 0; j < b; j++) {
                out[j * b + i] = x[i * b + j];
            }
        }
        return out;
    }

    private static void axpy(double a, double[] x, double[] y) {
        for (int i = 0; i < x.length; i++) {
            y[i] += a * x[i];
        }
    }
}
