package org.orbitrl.model.adapter.internal;

/**
 * The small dense algebra of one OFT block, in double precision on row-major b×b arrays: the
 * skew-symmetric matrix from its packed upper triangle, the Cayley map and PEFT's
 * Cayley-Neumann series, their reverse-mode derivatives, and the coft projection.
 *
 * <p>Conventions follow PEFT 0.21 ({@code OFTRotationModule}): the packed vector v of
 * b(b−1)/2 entries fills Q[i, j] = v[k] for the k-th pair i &lt; j in row-major order
 * ({@code torch.triu_indices(b, b, 1)}) and Q = U − Uᵀ. The exact map ({@code use_cayley_neumann=False})
 * is R = (I − Q)(I + Q)⁻¹ ({@code torch.linalg.solve(I + Q, I − Q, left=False)}); the series
 * ({@code use_cayley_neumann=True}, T terms) is the polynomial PEFT's loop builds,
 * R = I + 2Q + 2Q² + … + 2Q^{T−2} + Q^{T−1} for T ≥ 4 (T = 3 gives the same polynomial as T = 4,
 * T = 2 gives I + 2Q). For T ≥ 3 that polynomial is exactly (I − Q^{m})·(I + Q)(I − Q)⁻¹ with
 * m = max(T − 1, 3): the series approximates the Cayley map of −Q, the transpose of the exact map's
 * rotation, and RᵀR = (I − Q^{m})ᵀ(I − Q^{m}), so ‖RᵀR − I‖₂ ≤ 2‖Q‖₂^{m} + ‖Q‖₂^{2m}.
 */
public final class OftMath {
    private OftMath() {
    }

    /** Q [b, b] from the packed upper triangle v[off .. off + b(b−1)/2). */
    public static double[] skew(float[] v, int off, int b) {
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

    /** Accumulates the gradient of the packed vector from dL/dQ: g[off + k] += dQ[i, j] − dQ[j, i]. */
    public static void packGradient(double[] dq, int b, float[] g, int off) {
        int k = off;
        for (int i = 0; i < b; i++) {
            for (int j = i + 1; j < b; j++) {
                g[k] += (float) (dq[i * b + j] - dq[j * b + i]);
                k++;
            }
        }
    }

    /** The exact Cayley rotation R = (I − Q)(I + Q)⁻¹. */
    public static double[] cayley(double[] q, int b) {
        return mul(identityMinus(q, b), inverse(identityPlus(q, b), b), b);
    }

    /**
     * dL/dQ of the exact map, given G = dL/dR: with A = I + Q, dR = −(I + R)·dQ·A⁻¹, so
     * dL/dQ = −(I + R)ᵀ·G·A⁻ᵀ.
     */
    public static double[] cayleyBackward(double[] q, double[] g, int b) {
        double[] ainv = inverse(identityPlus(q, b), b);
        double[] r = mul(identityMinus(q, b), ainv, b);
        double[] ipr = r.clone();
        for (int i = 0; i < b; i++) {
            ipr[i * b + i] += 1;
        }
        double[] t = mul(transpose(ipr, b), g, b);
        double[] out = mul(t, transpose(ainv, b), b);
        for (int i = 0; i < out.length; i++) {
            out[i] = -out[i];
        }
        return out;
    }

    /**
     * The coefficients c[0..] of R = Σ c_k Q^k that PEFT's {@code _cayley_batch} loop accumulates for
     * {@code terms} Cayley-Neumann terms (read off its code, including its treatment of T ≤ 3).
     */
    public static double[] neumannCoefficients(int terms) {
        double[] c = new double[Math.max(terms, 4) + 1];
        c[0] = 1;
        if (terms > 1) {
            c[1] += 2;
            if (terms > 2) {
                c[2] += 2;
                int power = 2;
                for (int it = 3; it < terms - 1; it++) {
                    power++;
                    c[power] += 2;
                }
                power++;
                c[power] += 1;
            }
        }
        int last = c.length - 1;
        while (last > 0 && c[last] == 0) {
            last--;
        }
        return java.util.Arrays.copyOf(c, last + 1);
    }

    /** The Cayley-Neumann rotation R = Σ c_k Q^k. */
    public static double[] neumann(double[] q, int b, int terms) {
        double[] c = neumannCoefficients(terms);
        double[] r = new double[b * b];
        double[] p = identity(b);
        for (int k = 0; k < c.length; k++) {
            if (k > 0) {
                p = mul(p, q, b);
            }
            if (c[k] != 0) {
                for (int i = 0; i < r.length; i++) {
                    r[i] += c[k] * p[i];
                }
            }
        }
        return r;
    }

    /** dL/dQ of the series, given G = dL/dR: Σ_k c_k Σ_{a+e=k−1} (Q^a)ᵀ·G·(Q^e)ᵀ, with (Q^a)ᵀ = (−Q)^a. */
    public static double[] neumannBackward(double[] q, double[] g, int b, int terms) {
        double[] c = neumannCoefficients(terms);
        double[][] pt = new double[c.length][];   // pt[a] = (Q^a)ᵀ = (−Q)^a
        pt[0] = identity(b);
        double[] mq = q.clone();
        for (int i = 0; i < mq.length; i++) {
            mq[i] = -mq[i];
        }
        for (int a = 1; a < c.length; a++) {
            pt[a] = mul(pt[a - 1], mq, b);
        }
        double[] out = new double[b * b];
        for (int k = 1; k < c.length; k++) {
            if (c[k] == 0) {
                continue;
            }
            for (int a = 0; a < k; a++) {
                double[] t = mul(mul(pt[a], g, b), pt[k - 1 - a], b);
                for (int i = 0; i < out.length; i++) {
                    out[i] += c[k] * t[i];
                }
            }
        }
        return out;
    }

    /**
     * PEFT's coft projection of one block's packed vector, in place: with S the skew matrix and
     * ‖S‖_F = sqrt(2·Σv²), if ‖S‖_F &gt; radius, v ← radius·v/‖S‖_F. Returns whether it projected.
     */
    public static boolean project(float[] v, int off, int n, double radius) {
        double ss = 0;
        for (int k = 0; k < n; k++) {
            ss += (double) v[off + k] * v[off + k];
        }
        double norm = Math.sqrt(2 * ss);
        if (norm <= radius) {
            return false;
        }
        for (int k = 0; k < n; k++) {
            v[off + k] = (float) (radius * (v[off + k] / norm));
        }
        return true;
    }

    /** The inverse of a [b, b] matrix by Gauss-Jordan elimination with partial pivoting. */
    public static double[] inverse(double[] a, int b) {
        double[] m = a.clone();
        double[] inv = identity(b);
        for (int col = 0; col < b; col++) {
            int piv = col;
            for (int i = col + 1; i < b; i++) {
                if (Math.abs(m[i * b + col]) > Math.abs(m[piv * b + col])) {
                    piv = i;
                }
            }
            if (m[piv * b + col] == 0) {
                throw new ArithmeticException("singular matrix in OFT Cayley map");
            }
            swapRows(m, piv, col, b);
            swapRows(inv, piv, col, b);
            double d = 1 / m[col * b + col];
            for (int j = 0; j < b; j++) {
                m[col * b + j] *= d;
                inv[col * b + j] *= d;
            }
            for (int i = 0; i < b; i++) {
                double f = m[i * b + col];
                if (i == col || f == 0) {
                    continue;
                }
                for (int j = 0; j < b; j++) {
                    m[i * b + j] -= f * m[col * b + j];
                    inv[i * b + j] -= f * inv[col * b + j];
                }
            }
        }
        return inv;
    }

    /** x·y for [b, b] matrices. */
    public static double[] mul(double[] x, double[] y, int b) {
        double[] out = new double[b * b];
        for (int i = 0; i < b; i++) {
            for (int k = 0; k < b; k++) {
                double xik = x[i * b + k];
                if (xik == 0) {
                    continue;
                }
                for (int j = 0; j < b; j++) {
                    out[i * b + j] += xik * y[k * b + j];
                }
            }
        }
        return out;
    }

    public static double[] transpose(double[] x, int b) {
        double[] out = new double[b * b];
        for (int i = 0; i < b; i++) {
            for (int j = 0; j < b; j++) {
                out[j * b + i] = x[i * b + j];
            }
        }
        return out;
    }

    public static double[] identity(int b) {
        double[] out = new double[b * b];
        for (int i = 0; i < b; i++) {
            out[i * b + i] = 1;
        }
        return out;
    }

    private static double[] identityPlus(double[] q, int b) {
        double[] out = q.clone();
        for (int i = 0; i < b; i++) {
            out[i * b + i] += 1;
        }
        return out;
    }

    private static double[] identityMinus(double[] q, int b) {
        double[] out = new double[b * b];
        for (int i = 0; i < out.length; i++) {
            out[i] = -q[i];
        }
        for (int i = 0; i < b; i++) {
            out[i * b + i] += 1;
        }
        return out;
    }

    private static void swapRows(double[] m, int a, int c, int b) {
        if (a == c) {
            return;
        }
        for (int j = 0; j < b; j++) {
            double t = m[a * b + j];
            m[a * b + j] = m[c * b + j];
            m[c * b + j] = t;
        }
    }
}
