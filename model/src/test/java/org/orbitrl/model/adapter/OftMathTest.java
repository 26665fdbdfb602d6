package org.orbitrl.model.adapter;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.orbitrl.model.adapter.internal.OftMath;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The OFT block algebra against closed forms and central finite differences (double precision,
 * seeded random skew matrices), and the OFT config keys and layer splits against PEFT's rules.
 */
class OftMathTest {

    static float[] randomVector(int n, double std, long seed) {
        SplittableRandom rng = new SplittableRandom(seed);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (rng.nextGaussian() * std);
        }
        return v;
    }

    /** The packed order is torch.triu_indices(b, b, 1): (0,1), (0,2), (0,3), (1,2), (1,3), (2,3) for b = 4. */
    @Test
    void skewFollowsTriuIndicesOrder() {
        double[] q = OftMath.skew(new float[]{1, 2, 3, 4, 5, 6}, 0, 4);
        assertArrayEquals(new double[]{
                0, 1, 2, 3,
                -1, 0, 4, 5,
                -2, -4, 0, 6,
                -3, -5, -6, 0}, q, 0);
    }

    /** Coefficients of PEFT's loop, by hand: T=2: I+2Q; T=3 and T=4: I+2Q+2Q²+Q³; T=5: I+2Q+2Q²+2Q³+Q⁴. */
    @Test
    void neumannCoefficientsFollowPeftsLoop() {
        assertArrayEquals(new double[]{1, 2}, OftMath.neumannCoefficients(2), 0);
        assertArrayEquals(new double[]{1, 2, 2, 1}, OftMath.neumannCoefficients(3), 0);
        assertArrayEquals(new double[]{1, 2, 2, 1}, OftMath.neumannCoefficients(4), 0);
        assertArrayEquals(new double[]{1, 2, 2, 2, 1}, OftMath.neumannCoefficients(5), 0);
        assertArrayEquals(new double[]{1, 2, 2, 2, 2, 2, 1}, OftMath.neumannCoefficients(7), 0);
    }

    /** Closed forms: R_exact·(I + Q) = I − Q, and the series is (I − Q^m)·R_exactᵀ with m = max(T − 1, 3). */
    @ParameterizedTest
    @ValueSource(ints = {3, 4, 5, 7, 10})
    void cayleyAndSeriesSatisfyTheirClosedForms(int terms) {
        int b = 6;
        double[] q = OftMath.skew(randomVector(b * (b - 1) / 2, 0.3, 7 + terms), 0, b);
        double[] r = OftMath.cayley(q, b);
        double[] ipq = OftMath.identity(b);
        double[] imq = OftMath.identity(b);
        for (int i = 0; i < q.length; i++) {
            ipq[i] += q[i];
            imq[i] -= q[i];
        }
        assertArrayEquals(imq, OftMath.mul(r, ipq, b), 1e-12, "R(I+Q) = I−Q");
        int m = Math.max(terms - 1, 3);
        double[] qm = OftMath.identity(b);
        for (int i = 0; i < m; i++) {
            qm = OftMath.mul(qm, q, b);
        }
        double[] imqm = OftMath.identity(b);
        for (int i = 0; i < qm.length; i++) {
            imqm[i] -= qm[i];
        }
        assertArrayEquals(OftMath.mul(imqm, OftMath.transpose(r, b), b), OftMath.neumann(q, b, terms), 1e-12,
                "series with " + terms + " terms = (I − Q^m)·R_exactᵀ");
    }

    /** Backward of both maps against central differences of L = Σ G∘R in each packed parameter. */
    @ParameterizedTest
    @ValueSource(ints = {0, 2, 3, 5, 7})
    void gradientsMatchFiniteDifferences(int terms) {
        int b = 5;
        int n = b * (b - 1) / 2;
        float[] v = randomVector(n, 0.2, 100 + terms);
        double[] g = new double[b * b];
        SplittableRandom rng = new SplittableRandom(200 + terms);
        for (int i = 0; i < g.length; i++) {
            g[i] = rng.nextGaussian();
        }
        double[] q = OftMath.skew(v, 0, b);
        double[] dq = terms == 0 ? OftMath.cayleyBackward(q, g, b) : OftMath.neumannBackward(q, g, b, terms);
        float[] analytic = new float[n];
        OftMath.packGradient(dq, b, analytic, 0);
        double h = 1e-3;
        for (int k = 0; k < n; k++) {
            double[] plus = perturbed(v, k, h, b);
            double[] minus = perturbed(v, k, -h, b);
            double[] rp = terms == 0 ? OftMath.cayley(plus, b) : OftMath.neumann(plus, b, terms);
            double[] rm = terms == 0 ? OftMath.cayley(minus, b) : OftMath.neumann(minus, b, terms);
            double fd = 0;
            for (int i = 0; i < g.length; i++) {
                fd += g[i] * (rp[i] - rm[i]) / (2 * h);
            }
            assertEquals(fd, analytic[k], 1e-5 + 1e-5 * Math.abs(fd), "terms " + terms + ", parameter " + k);
        }
    }

    private static double[] perturbed(float[] v, int k, double h, int b) {
        double[] q = OftMath.skew(v, 0, b);
        int idx = 0;
        for (int i = 0; i < b; i++) {
            for (int j = i + 1; j < b; j++) {
                if (idx++ == k) {
                    q[i * b + j] += h;
                    q[j * b + i] -= h;
                }
            }
        }
        return q;
    }

    /** coft: inside the ball nothing changes; outside, v is scaled so that ‖skew(v)‖_F = sqrt(2)·‖v‖ equals the radius. */
    @Test
    void coftProjectsOntoTheFrobeniusBall() {
        float[] v = {3, 4, 0};            // ‖skew‖_F = sqrt(2)·5
        float[] inside = v.clone();
        assertFalse(OftMath.project(inside, 0, 3, 7.1));
        assertArrayEquals(v, inside, 0f);
        float[] out = v.clone();
        assertTrue(OftMath.project(out, 0, 3, 1.0));
        double s = 1.0 / (Math.sqrt(2) * 5);
        assertArrayEquals(new float[]{(float) (3 * s), (float) (4 * s), 0f}, out, 1e-7f);
    }

    @Test
    void inverseOfARandomMatrix() {
        int b = 7;
        double[] a = new double[b * b];
        SplittableRandom rng = new SplittableRandom(3);
        for (int i = 0; i < a.length; i++) {
            a[i] = rng.nextGaussian();
        }
        assertArrayEquals(OftMath.identity(b), OftMath.mul(a, OftMath.inverse(a, b), b), 1e-10);
    }

    /** PEFT's adjust_oft_parameters and the r / oft_block_size relation, by hand. */
    @Test
    void layerSplitFollowsPeft() {
        assertEquals(new OftSettings.Layout(4, 16, 4), OftSettings.ofBlockSize(16).layout(64));
        assertEquals(new OftSettings.Layout(4, 32, 1), new OftSettings(4, 0, false, 6e-5, true, true, 5).layout(128));
        // 100 % 16 != 0: the divisors around 16 are 10 (6 below) and 20 (4 above): 20.
        assertEquals(new OftSettings.Layout(5, 20, 5), OftSettings.ofBlockSize(16).layout(100));
        // 96 % 10 != 0: 8 (2 below) and 12 (2 above): a tie goes to the lower one.
        assertEquals(8, OftSettings.adjust(96, 10));
        // a block larger than the layer becomes the whole layer
        assertEquals(new OftSettings.Layout(1, 64, 1), OftSettings.ofBlockSize(128).layout(64));
        assertThrows(IllegalArgumentException.class, () -> new OftSettings(4, 16, false, 6e-5, false, true, 5));
        assertThrows(IllegalArgumentException.class, () -> new OftSettings(0, 0, false, 6e-5, false, true, 5));
    }

    /** The config keys PEFT writes are read; what Orbit does not implement is refused with the key named. */
    @Test
    void oftConfigKeys(@TempDir Path tmp) throws Exception {
        Path f = tmp.resolve("adapter_config.json");
        Files.writeString(f, """
                {"peft_type": "OFT", "r": 0, "oft_block_size": 8, "target_modules": ["q_proj"],
                 "module_dropout": 0.0, "bias": "none", "init_weights": true}""");
        AdapterConfig c = AdapterConfig.read(f);
        assertEquals(new OftSettings(0, 8, false, 6e-5, false, true, 5), c.oft(), "PEFT's defaults for absent keys");
        Files.writeString(f, """
                {"peft_type": "OFT", "r": 0, "oft_block_size": 8, "target_modules": ["q_proj"], "coft": true,
                 "eps": 0.25, "block_share": true, "use_cayley_neumann": false, "num_cayley_neumann_terms": 9}""");
        assertEquals(new OftSettings(0, 8, true, 0.25, true, false, 9), AdapterConfig.read(f).oft());
        String[][] bad = {
                {"{\"peft_type\": \"OFT\", \"r\": 4, \"target_modules\": [\"q_proj\"]}", "oft_block_size"},
                {"{\"peft_type\": \"OFT\", \"r\": 4, \"oft_block_size\": 8, \"target_modules\": [\"q_proj\"]}", "r (4)"},
                {"{\"peft_type\": \"OFT\", \"r\": 0, \"oft_block_size\": 8, \"module_dropout\": 0.1, \"target_modules\": [\"q\"]}",
                        "module_dropout"},
                {"{\"peft_type\": \"OFT\", \"r\": 0, \"oft_block_size\": 8, \"bias\": \"oft_only\", \"target_modules\": [\"q\"]}",
                        "bias"},
                {"{\"peft_type\": \"OFT\", \"r\": 0, \"oft_block_size\": 8, \"exclude_modules\": [\"k\"], \"target_modules\": [\"q\"]}",
                        "exclude_modules"},
                {"{\"peft_type\": \"OFT\", \"r\": 0, \"oft_block_size\": 8, \"target_modules\": [\"q\"], \"target_parameters\": [\"mlp.experts.down_proj\"]}",
                        "target_parameters"},
                {"{\"peft_type\": \"OFT\", \"r\": 0, \"oft_block_size\": 8, \"use_cayley_neumann\": \"yes\", \"target_modules\": [\"q\"]}",
                        "use_cayley_neumann"},
        };
        for (String[] b : bad) {
            Files.writeString(f, b[0]);
            var e = assertThrows(IllegalArgumentException.class, () -> AdapterConfig.read(f), b[0]);
            assertTrue(e.getMessage().contains(b[1]) && e.getMessage().contains(f.toString()),
                    "message names the file and " + b[1] + ": " + e.getMessage());
        }
    }
}
