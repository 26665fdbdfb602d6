package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Embedding gather, top-k and argmax against the scalar backend: all exact (indices equal,
 * values bitwise equal), including ties (broken towards the lower index) and vocabulary-sized rows.
 */
class CudaSelectTest extends CudaTestBase {

    /** Widths 129, 2048 and 2500: one partial pass of a thread's loads, one whole, one and a tail (256 threads, 8 a pass). */
    @Test
    void embeddingF32AndBf16TablesI32AndI64Ids() {
        SplittableRandom r = rng(61);
        int vocab = 1000;
        for (int h : new int[]{129, 2048, 2500}) {
            for (DType tt : new DType[]{DType.F32, DType.BF16}) {
                for (DType it : new DType[]{DType.I32, DType.I64}) {
                    Tensor table = randn(r, 1f, vocab, h).to(tt);
                    Tensor ids = Tensor.allocate(Arena.ofAuto(), it, 2, 9);
                    for (int i = 0; i < 18; i++) {
                        ids.setLong(r.nextInt(vocab), i / 9, i % 9);
                    }
                    Tensor ref = Tensor.allocate(Arena.ofAuto(), DType.F32, 2, 9, h);
                    cpu.embedding(table, ids, ref);
                    Tensor out = poisoned(DType.F32, 2, 9, h);
                    gpu.embedding(dev(table), dev(ids), out);
                    assertClose("embedding " + tt + " ids " + it + " width " + h, ref.toFloatArray(),
                            gpu.toHost(out).toFloatArray(), 0, 0);
                }
            }
        }
    }

    @Test
    void embeddingIdOutsideVocabularyIsReported() {
        Tensor table = dev(randn(rng(62), 1f, 10, 4));
        Tensor out = poisoned(DType.F32, 3, 4);
        gpu.embedding(table, dev(Tensor.ofInts(new int[]{1, 10, 2}, 3)), out);
        IndexOutOfBoundsException e = assertThrows(IndexOutOfBoundsException.class, gpu::synchronize);
        assertTrue(e.getMessage().contains("token id 10"), e.getMessage());
    }

    @Test
    void topkAndArgmaxWithTies() {
        SplittableRandom r = rng(63);
        int[][] cases = {{1, 1, 1}, {5, 8, 8}, {64, 128, 8}, {3, 1000, 50}, {2, 151_937, 20}}; // rows, n, k
        for (int[] c : cases) {
            for (boolean ties : new boolean[]{false, true}) {
                int rows = c[0], n = c[1], k = c[2];
                Tensor x = randn(r, 5f, rows, n);
                if (ties) {
                    float[] v = x.toFloatArray();
                    for (int i = 0; i < v.length; i++) {
                        v[i] = Math.round(v[i]); // 11 distinct values: many ties
                    }
                    x = Tensor.of(v, rows, n);
                }
                for (DType it : new DType[]{DType.I32, DType.I64}) {
                    Tensor refV = Tensor.allocate(Arena.ofAuto(), DType.F32, rows, k);
                    Tensor refI = Tensor.allocate(Arena.ofAuto(), it, rows, k);
                    cpu.topk(x, k, refV, refI);
                    Tensor dx = dev(x);
                    Tensor v = poisoned(DType.F32, rows, k);
                    Tensor idx = poisoned(it, rows, k);
                    gpu.topk(dx, k, v, idx);
                    String what = "topk rows=" + rows + " n=" + n + " k=" + k + (ties ? " ties" : "") + " " + it;
                    assertExact(what + " indices", refI.toLongArray(), gpu.toHost(idx).toLongArray());
                    assertClose(what + " values", refV.toFloatArray(), gpu.toHost(v).toFloatArray(), 0, 0);

                    Tensor refA = Tensor.allocate(Arena.ofAuto(), it, rows);
                    cpu.argmax(x, refA);
                    Tensor a = poisoned(it, rows);
                    gpu.argmax(dx, a);
                    assertExact("argmax rows=" + rows + " n=" + n + (ties ? " ties" : "") + " " + it,
                            refA.toLongArray(), gpu.toHost(a).toLongArray());
                }
            }
        }
    }
}
