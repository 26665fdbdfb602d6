package org.orbitrl.kernels.cuda.internal;

import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.orbitrl.kernels.cuda.CudaCheck;

import static org.bytedeco.cuda.global.cublas.CUBLAS_COMPUTE_32F;
import static org.bytedeco.cuda.global.cublas.CUBLAS_OP_N;
import static org.bytedeco.cuda.global.cublas.CUBLAS_OP_T;
import static org.bytedeco.cuda.global.cublas.cublasGemmGroupedBatchedEx;

/**
 * cuBLAS's grouped product ({@code cublasGemmGroupedBatchedEx}): G independent column-major products
 * {@code C_g = alpha·op(A_g)·op(B_g) + beta·C_g} of their own sizes in one call, one problem a group,
 * f32 accumulation. Sizes and leading dimensions are host arrays read during the call; the A, B and C
 * pointer arrays [G] are device memory. Supported type combinations (cuBLAS 12.5+ documentation):
 * f32 × f32 → f32, bf16 × bf16 → bf16 and f16 × f16 → f16; bf16 inputs with an f32 output are not in
 * the table, which is why callers probe {@link #run}'s status before relying on them.
 *
 * <p>The host arrays are native JavaCPP buffers owned by this object and grown on demand; they stay
 * reachable in its fields for as long as a call may read them.
 */
public final class GroupedGemm {
    private final Cublas cublas;
    private int capacity;
    private IntPointer transA;     // [capacity] cublasOperation_t
    private IntPointer transB;     // [capacity]
    private IntPointer m;          // [capacity]
    private IntPointer n;          // [capacity]
    private IntPointer k;          // [capacity]
    private IntPointer lda;        // [capacity]
    private IntPointer ldb;        // [capacity]
    private IntPointer ldc;        // [capacity]
    private IntPointer groupSize;  // [capacity], all 1
    private FloatPointer alpha;    // [capacity]
    private FloatPointer beta;     // [capacity]

    public GroupedGemm(Cublas cublas) {
        this.cublas = cublas;
        grow(256);
    }

    /**
     * Issues the grouped product over {@code groups} problems; returns cuBLAS's status (0 on success)
     * without throwing, so that a caller can try a type combination and fall back.
     *
     * @param aArray device address of {@code groups} device pointers to the A matrices (likewise B, C)
     */
    public int run(boolean transposeA, boolean transposeB, int groups, int[] ms, int[] ns, int[] ks, int[] ldas, int[] ldbs,
                   int[] ldcs, float alphaValue, float betaValue, long aArray, int aType, long bArray, int bType, long cArray,
                   int cType) {
        if (groups <= 0 || ms.length < groups || ns.length < groups || ks.length < groups || ldas.length < groups
                || ldbs.length < groups || ldcs.length < groups) {
            throw new IllegalArgumentException("grouped product: " + groups + " groups with size arrays of "
                    + ms.length + "/" + ns.length + "/" + ks.length + " entries");
        }
        if (groups > capacity) {
            grow(Math.max(groups, 2 * capacity));
        }
        for (int g = 0; g < groups; g++) {
            transA.put(g, transposeA ? CUBLAS_OP_T : CUBLAS_OP_N);
            transB.put(g, transposeB ? CUBLAS_OP_T : CUBLAS_OP_N);
            alpha.put(g, alphaValue);
            beta.put(g, betaValue);
        }
        m.put(ms, 0, groups);
        n.put(ns, 0, groups);
        k.put(ks, 0, groups);
        lda.put(ldas, 0, groups);
        ldb.put(ldbs, 0, groups);
        ldc.put(ldcs, 0, groups);
        return cublasGemmGroupedBatchedEx(cublas.handle(), transA, transB, m, n, k, alpha,
                new PointerArray(aArray), aType, lda, new PointerArray(bArray), bType, ldb, beta,
                new PointerArray(cArray), cType, ldc, groups, groupSize, CUBLAS_COMPUTE_32F);
    }

    /** {@link #run}, throwing on any status but success. */
    public void check(String op, boolean transposeA, boolean transposeB, int groups, int[] ms, int[] ns, int[] ks, int[] ldas,
                      int[] ldbs, int[] ldcs, float alphaValue, float betaValue, long aArray, int aType, long bArray, int bType,
                      long cArray, int cType) {
        int err = run(transposeA, transposeB, groups, ms, ns, ks, ldas, ldbs, ldcs, alphaValue, betaValue, aArray, aType, bArray,
                bType, cArray, cType);
        CudaCheck.cublas(err, "cublasGemmGroupedBatchedEx (" + op + ")", groups + " groups",
                (transposeA ? "T" : "N") + (transposeB ? "T" : "N"), "m " + ms[0], "n " + ns[0], "k " + ks[0],
                "types " + aType + "/" + bType + " -> " + cType);
    }

    private void grow(int groups) {
        capacity = groups;
        transA = new IntPointer(groups);
        transB = new IntPointer(groups);
        m = new IntPointer(groups);
        n = new IntPointer(groups);
        k = new IntPointer(groups);
        lda = new IntPointer(groups);
        ldb = new IntPointer(groups);
        ldc = new IntPointer(groups);
        groupSize = new IntPointer(groups);
        for (int g = 0; g < groups; g++) {
            groupSize.put(g, 1);
        }
        alpha = new FloatPointer(groups);
        beta = new FloatPointer(groups);
    }
}
