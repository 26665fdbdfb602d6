package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.AttentionSpec;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;

import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Decode attention over a latent paged cache ({@code pagedDecodeAttention} with no value cache: one key head whose first
 * Dv channels are the values; {@link CudaLatentDecode}) against the scalar backend's attention over the same keys
 * gathered in position order, the values a view of their leading channels. Kimi-K2's widths (64 heads, keys 576, values
 * 512), DeepSeek-V3's (128 heads), a head count that leaves a partial tile of 16 (24), ragged contexts (1 to 1000 keys,
 * batches of 1 to 16) in blocks of 16 and 64 handed out in a shuffled order with spare blocks of garbage, tables wider
 * than any sequence, q and out as strided views whose padding must stay untouched.
 * <ul>
 *   <li>bf16 cache, the tensor-core kernel: within its rounding bound of the exact attention over the same values (q and
 *   the probabilities rounded to bf16: {@link #bound}; the error's rms within 2% of the reference's), and different from the gathered form
 *   ({@code -Dorbit.cuda.pagedMla=off}), which shows it ran; that form within the same bound.</li>
 *   <li>f32 cache, the per-query kernel through the tables: |err| ≤ 2e-6 + 2e-5·|ref|.</li>
 *   <li>f32 cache in exact mode: each row equal bit for bit to the exact backend's attention of that query over the
 *   sequence's keys (a prefill's), as training computes it.</li>
 * </ul>
 */
class CudaLatentDecodeTest extends CudaTestBase {

    private record Case(int hq, int d, int dv, int blockSize, int[] lens) {
        @Override
        public String toString() {
            return String.format("Hq=%d D=%d Dv=%d block=%d B=%d lens=%s", hq, d, dv, blockSize, lens.length,
                    lens.length <= 6 ? Arrays.toString(lens) : Arrays.toString(Arrays.copyOf(lens, 6)) + "...");
        }
    }

    private static List<Case> cases() {
        SplittableRandom r = rng(81);
        int[] ragged = new int[16];
        for (int i = 0; i < ragged.length; i++) {
            ragged[i] = i < 3 ? new int[]{1, 33, 1000}[i] : 1 + r.nextInt(600);
        }
        return List.of(
                new Case(64, 576, 512, 16, new int[]{700}),
                new Case(64, 576, 512, 16, new int[]{1, 37, 300}),
                new Case(128, 576, 512, 64, new int[]{250, 5}),
                new Case(24, 576, 512, 16, new int[]{64, 65, 1}),
                new Case(64, 576, 512, 16, ragged));
    }

    /** The outputs of one case [B·Hq·Dv] on {@code backend}, q and out strided views, the padding checked. */
    private float[] run(CudaBackend backend, Case c, Data x, boolean bf16, String what) {
        int b = c.lens().length;
        Tensor dq = upload(backend, x.qWide).slice(2, 0, c.d());
        Tensor dkc = upload(backend, bf16 ? x.kc.to(DType.BF16) : x.kc);
        Tensor dt = upload(backend, Tensor.ofInts(x.tables, b, x.maxBlocks));
        Tensor dl = upload(backend, Tensor.ofInts(c.lens(), b));
        int pad = 4;
        Tensor hostPoison = Tensor.allocate(Arena.ofAuto(), DType.F32, b, c.hq(), c.dv() + pad);
        hostPoison.fill(Float.NaN);
        Tensor outWide = upload(backend, hostPoison);
        backend.pagedDecodeAttention(dq, dkc, null, dt, dl, c.blockSize(), 1, outWide.slice(2, 0, c.dv()),
                new AttentionSpec(x.scale, 0, null));
        float[] wide = backend.toHost(outWide).toFloatArray();
        for (Tensor t : new Tensor[]{dq, dkc, dt, dl, outWide}) {
            backend.free(t);
        }
        float[] got = new float[b * c.hq() * c.dv()];
        for (int row = 0; row < b * c.hq(); row++) {
            System.arraycopy(wide, row * (c.dv() + pad), got, row * c.dv(), c.dv());
            for (int p = 0; p < pad; p++) {
                if (!Float.isNaN(wide[row * (c.dv() + pad) + c.dv() + p])) {
                    fail(what + ": padding of out row " + row + " was written");
                }
            }
        }
        return got;
    }

    private static Tensor upload(CudaBackend backend, Tensor host) {
        return backend.toDevice(host);
    }

    /** A case's inputs: the pool, tables, q (rows D + 8 wide) and the scale. */
    private static final class Data {
        Tensor kc;
        Tensor qWide;
        int[] tables;
        int maxBlocks;
        float scale;
    }

    private static Data data(Case c, SplittableRandom r, boolean bf16) {
        int bs = c.blockSize();
        int total = 0;
        int widest = 0;
        for (int len : c.lens()) {
            int nb = (len + bs - 1) / bs;
            widest = Math.max(widest, nb);
            total += nb;
        }
        Data x = new Data();
        x.maxBlocks = widest + 1;
        int poolBlocks = total + 3;
        List<Integer> perm = new ArrayList<>();
        for (int i = 0; i < poolBlocks; i++) {
            perm.add(i);
        }
        Collections.shuffle(perm, new Random(r.nextLong()));
        x.tables = new int[c.lens().length * x.maxBlocks];
        Arrays.fill(x.tables, -1);
        int next = 0;
        for (int i = 0; i < c.lens().length; i++) {
            for (int j = 0; j < (c.lens()[i] + bs - 1) / bs; j++) {
                x.tables[i * x.maxBlocks + j] = perm.get(next++);
            }
        }
        x.kc = randn(r, 1f, (long) poolBlocks * bs, c.d());
        if (bf16) {
            x.kc = Tensor.of(bf16Round(x.kc.toFloatArray()), x.kc.shape());
        }
        x.qWide = randn(r, 0.5f, c.lens().length, c.hq(), c.d() + 8);
        x.scale = (float) (1 / Math.sqrt(192));   // DeepSeek-V3's softmax scale without its YaRN factor: qk_head_dim 192
        return x;
    }

    /** The sequence's keys [len, 1, D] in position order. */
    private static Tensor keys(Case c, Data x, int i) {
        int len = c.lens()[i];
        Tensor k = Tensor.allocate(Arena.ofAuto(), DType.F32, len, 1, c.d());
        for (int s = 0; s < len; s++) {
            long row = (long) x.tables[i * x.maxBlocks + s / c.blockSize()] * c.blockSize() + s % c.blockSize();
            k.select(0, s).copyFrom(x.kc.select(0, row).reshape(1, c.d()));
        }
        return k;
    }

    /** The scalar backend's attention of every sequence's query over its keys, values their first Dv channels. */
    private static float[] reference(Case c, Data x) {
        int b = c.lens().length;
        float[] ref = new float[b * c.hq() * c.dv()];
        Tensor q = x.qWide.slice(2, 0, c.d()).contiguous();
        for (int i = 0; i < b; i++) {
            Tensor k = keys(c, x, i);
            Tensor o = Tensor.allocate(Arena.ofAuto(), DType.F32, 1, c.hq(), c.dv());
            cpu.attention(q.slice(0, i, i + 1).contiguous(), k, k.slice(2, 0, c.dv()), o, c.lens()[i] - 1,
                    new AttentionSpec(x.scale, 0, null));
            System.arraycopy(o.toFloatArray(), 0, ref, i * c.hq() * c.dv(), c.hq() * c.dv());
        }
        return ref;
    }

    /**
     * How far the tensor-core kernel's row (sequence i, head h) may be from the exact attention over the same bf16 keys:
     * q rounded to bf16 moves each score by at most Δ = 2⁻⁹·scale·Σ|q_d·k_d|, the probabilities rounded to bf16 move the
     * value products by a relative 2⁻⁹, so |õ − o| ≤ ((e^{2Δ} − 1) + 2⁻⁹·e^{2Δ})·max|v| + 1e-5 (as the tensor-core
     * paged kernels' bound in {@code CudaPagedDecodeTest}).
     */
    private static float bound(Case c, Data x, Tensor k, int i, int h) {
        double delta = 0;
        double maxV = 0;
        for (int s = 0; s < c.lens()[i]; s++) {
            double sum = 0;
            for (int d = 0; d < c.d(); d++) {
                float kv = k.getFloat(s, 0, d);
                sum += Math.abs(x.qWide.getFloat(i, h, d) * kv);
                if (d < c.dv()) {
                    maxV = Math.max(maxV, Math.abs(kv));
                }
            }
            delta = Math.max(delta, Math.scalb(x.scale * sum, -9));
        }
        double grow = Math.exp(2 * delta);
        return (float) (((grow - 1) + Math.scalb(grow, -9)) * maxV + 1e-5);
    }

    /**
     * Within {@link #bound} element by element, and the error's root mean square within 2% of the reference's (the
     * roundings of q and P to bf16 give about 2⁻⁸ of it; a row, head or channel out of place gives the order of 1): the
     * bound alone is loose where many keys average the values towards 0.
     */
    private static void assertWithinBound(String what, Case c, Data x, float[] ref, float[] got) {
        double err = 0;
        double norm = 0;
        for (int j = 0; j < ref.length; j++) {
            err += (got[j] - ref[j]) * (double) (got[j] - ref[j]);
            norm += ref[j] * (double) ref[j];
        }
        assertTrue(Math.sqrt(err) <= 0.02 * Math.sqrt(norm), what + ": rms error " + Math.sqrt(err / ref.length) + " against rms "
                + Math.sqrt(norm / ref.length));
        for (int i = 0; i < c.lens().length; i++) {
            Tensor k = keys(c, x, i);
            for (int h = 0; h < c.hq(); h++) {
                float tol = bound(c, x, k, i, h);
                for (int e = 0; e < c.dv(); e++) {
                    int j = (i * c.hq() + h) * c.dv() + e;
                    if (!(Math.abs(got[j] - ref[j]) <= tol)) {
                        fail(what + ": sequence " + i + " head " + h + " channel " + e + " " + got[j] + ", reference " + ref[j]
                                + ", bound " + tol);
                    }
                }
            }
        }
    }

    @Test
    void theTensorCoreKernelOverABf16CacheIsWithinItsRoundingBound() {
        SplittableRandom r = rng(83);
        for (Case c : cases()) {
            Data x = data(c, r, true);
            float[] ref = reference(c, x);
            float[] mma = run(gpu, c, x, true, "tensor cores " + c);
            assertWithinBound("tensor cores " + c, c, x, ref, mma);
            float[][] gathered = new float[1][];
            withProperty("orbit.cuda.pagedMla", "off", () -> gathered[0] = run(gpu, c, x, true, "gathered " + c));
            assertWithinBound("gathered " + c, c, x, ref, gathered[0]);
            assertTrue(!Arrays.equals(mma, gathered[0]), c + ": the tensor-core kernel's output equals the gathered form's");
        }
    }

    @Test
    void anF32CacheTakesThePerQueryKernelThroughTheTables() {
        SplittableRandom r = rng(85);
        for (Case c : cases()) {
            Data x = data(c, r, false);
            assertClose("f32 cache " + c, reference(c, x), run(gpu, c, x, false, "f32 cache " + c), 2e-6, 2e-5);
        }
    }

    @Test
    void inExactModeEachRowEqualsThePrefillAttentionBitForBit() {
        SplittableRandom r = rng(87);
        try (CudaBackend exact = new CudaBackend(0, CudaBackend.defaultCacheDir(), true)) {
            for (Case c : cases()) {
                Data x = data(c, r, false);
                float[] got = run(exact, c, x, false, "exact " + c);
                Tensor q = x.qWide.slice(2, 0, c.d()).contiguous();
                for (int i = 0; i < c.lens().length; i++) {
                    Tensor k = exact.toDevice(keys(c, x, i));
                    Tensor qi = exact.toDevice(q.slice(0, i, i + 1).contiguous());
                    Tensor o = exact.toDevice(Tensor.allocate(Arena.ofAuto(), DType.F32, 1, c.hq(), c.dv()));
                    exact.attention(qi, k, k.slice(2, 0, c.dv()), o, c.lens()[i] - 1, new AttentionSpec(x.scale, 0, null));
                    float[] want = exact.toHost(o).toFloatArray();
                    assertBitsEqual("exact " + c + " sequence " + i,
                            want, Arrays.copyOfRange(got, i * c.hq() * c.dv(), (i + 1) * c.hq() * c.dv()));
                    for (Tensor t : new Tensor[]{k, qi, o}) {
                        exact.free(t);
                    }
                }
            }
        }
    }
}
