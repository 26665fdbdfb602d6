package org.orbitrl.kernels;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Rotary frequencies against closed forms evaluated in double precision, for the rope types
 * of the configs Orbit supports (transformers' {@code modeling_rope_utils}: default, linear,
 * YaRN with and without truncation, mscale/mscale_all_dim, an explicit attention factor, a
 * factor derived from the context lengths). The exponent {@code 2i/dim} is rounded to float as
 * transformers computes it; everything after it is exact in the expectation. Tolerance: 1e-6
 * relative per frequency (a few float32 roundings).
 */
class RopeScalingTest {

    private static final double RTOL = 1e-6;

    private static double exponent(int i, int dim) {
        return (float) (2 * i) / (float) dim; // arange(0, dim, 2).float() / dim, in float32
    }

    /** θ^-(2i/dim) for i < dim/2. */
    private static double[] plain(double theta, int dim) {
        double[] f = new double[dim / 2];
        for (int i = 0; i < f.length; i++) {
            f[i] = 1.0 / Math.pow(theta, exponent(i, dim));
        }
        return f;
    }

    /**
     * YaRN, from the paper's definition as transformers implements it: the correction range
     * [low, high] of dimensions whose wavelength sees between betaFast and betaSlow rotations in
     * the original context, a linear ramp over it, extrapolated (unscaled) frequencies below low
     * and interpolated (÷ factor) ones above high.
     */
    private static double[] yarn(double theta, int dim, double factor, int orig, double betaFast, double betaSlow,
                                 boolean truncate) {
        double low = dim * Math.log(orig / (betaFast * 2 * Math.PI)) / (2 * Math.log(theta));
        double high = dim * Math.log(orig / (betaSlow * 2 * Math.PI)) / (2 * Math.log(theta));
        if (truncate) {
            low = Math.floor(low);
            high = Math.ceil(high);
        }
        low = Math.max(low, 0);
        high = Math.min(high, dim - 1);
        if (low == high) {
            high += 0.001;
        }
        double[] base = plain(theta, dim);
        double[] f = new double[dim / 2];
        for (int i = 0; i < f.length; i++) {
            double ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
            double extrapolationWeight = 1 - ramp;
            f[i] = base[i] / factor * ramp + base[i] * extrapolationWeight;
        }
        return f;
    }

    private static void assertFrequencies(String what, double[] expected, float[] got) {
        assertEquals(expected.length, got.length, what + ": number of frequencies");
        StringBuilder bad = new StringBuilder();
        for (int i = 0; i < expected.length; i++) {
            double err = Math.abs(got[i] - expected[i]);
            if (err > RTOL * Math.abs(expected[i])) {
                bad.append(String.format("%n  [%d] expected %.9g got %.9g (rel %.2g)", i, expected[i], got[i],
                        err / Math.abs(expected[i])));
            }
        }
        if (!bad.isEmpty()) {
            fail(what + ": frequencies outside 1e-6 relative:" + bad);
        }
    }

    @Test
    void defaultAndLinearMatchTheClosedForm() {
        // Qwen3: θ = 1e6, head_dim 128
        assertFrequencies("default θ=1e6 dim=128", plain(1e6, 128), RopeScaling.defaults(1e6, 40960).inverseFrequencies(128));
        // a small hand-checkable case: θ = 10000, dim 8 → 1, 10^-1, 10^-2, 10^-3
        assertFrequencies("default θ=1e4 dim=8", new double[]{1, 0.1, 0.01, 0.001},
                RopeScaling.defaults(10_000, 64).inverseFrequencies(8));
        // partial rotary: int(80 · 0.25) = 20 rotated channels, frequencies over dim 20
        int rd = RopeScaling.rotaryDim(80, 0.25);
        assertEquals(20, rd);
        assertFrequencies("default partial dim=20", plain(10_000, 20), RopeScaling.defaults(10_000, 64).inverseFrequencies(rd));

        RopeScaling linear = new RopeScaling(RopeScaling.Type.LINEAR, 10_000, 4, 0, 8192, 32, 1, 0, 0, Double.NaN, true);
        double[] expected = plain(10_000, 16);
        for (int i = 0; i < expected.length; i++) {
            expected[i] /= 4;
        }
        assertFrequencies("linear ×4", expected, linear.inverseFrequencies(16));
        assertEquals(1f, linear.attentionFactor());
    }

    @Test
    void yarnSmallCaseByHand() {
        // θ = 10000, dim 16, original context 64, factor 8, β 32/1, truncated:
        // low  = floor(16·ln(64/(32·2π)) / (2·ln 10^4)) = floor(-0.99) → clamped to 0
        // high = ceil (16·ln(64/(1·2π))  / (2·ln 10^4)) = ceil(2.016) = 3
        // ramp(i) = i/3 clamped: frequency 0 unscaled, 1 and 2 blended, 3..7 divided by 8
        RopeScaling y = new RopeScaling(RopeScaling.Type.YARN, 10_000, 8, 64, 512, 32, 1, 0, 0, Double.NaN, true);
        double[] base = plain(10_000, 16);
        double[] expected = new double[8];
        expected[0] = base[0];
        expected[1] = base[1] * (2.0 / 3) + base[1] / 8 * (1.0 / 3);
        expected[2] = base[2] * (1.0 / 3) + base[2] / 8 * (2.0 / 3);
        for (int i = 3; i < 8; i++) {
            expected[i] = base[i] / 8;
        }
        assertFrequencies("yarn by hand", expected, y.inverseFrequencies(16));
        assertFrequencies("yarn by hand (formula)", yarn(10_000, 16, 8, 64, 32, 1, true), y.inverseFrequencies(16));
        // attention factor 0.1·ln 8 + 1
        assertEquals(0.1 * Math.log(8) + 1, y.attentionFactor(), 1e-7);
    }

    @Test
    void yarnAsTheSupportedConfigsUseIt() {
        // gpt-oss: θ 150000, head_dim 64, factor 32, original 4096, truncate false
        RopeScaling gptOss = new RopeScaling(RopeScaling.Type.YARN, 150_000, 32, 4096, 131072, 32, 1, 0, 0, Double.NaN, false);
        assertFrequencies("gpt-oss", yarn(150_000, 64, 32, 4096, 32, 1, false), gptOss.inverseFrequencies(64));
        assertEquals(0.1 * Math.log(32) + 1, gptOss.attentionFactor(), 1e-7); // 1.3465736

        // DeepSeek V3: θ 10000, qk_rope_head_dim 64, factor 40, original 4096, mscale = mscale_all_dim = 1
        RopeScaling dsv3 = new RopeScaling(RopeScaling.Type.YARN, 10_000, 40, 4096, 163840, 32, 1, 1, 1, Double.NaN, true);
        assertFrequencies("deepseek-v3", yarn(10_000, 64, 40, 4096, 32, 1, true), dsv3.inverseFrequencies(64));
        assertEquals(1f, dsv3.attentionFactor()); // get_mscale(40, 1) / get_mscale(40, 1)

        // mscale 0.707 over mscale_all_dim 1: (0.1·0.707·ln 40 + 1) / (0.1·ln 40 + 1)
        RopeScaling ratio = new RopeScaling(RopeScaling.Type.YARN, 10_000, 40, 4096, 163840, 32, 1, 0.707, 1, Double.NaN, true);
        assertEquals((0.1 * 0.707 * Math.log(40) + 1) / (0.1 * Math.log(40) + 1), ratio.attentionFactor(), 1e-7);
        // only mscale given: transformers falls back to get_mscale(factor)
        RopeScaling onlyMscale = new RopeScaling(RopeScaling.Type.YARN, 10_000, 40, 4096, 163840, 32, 1, 0.707, 0, Double.NaN, true);
        assertEquals(0.1 * Math.log(40) + 1, onlyMscale.attentionFactor(), 1e-7);

        // Kimi K2: β_fast = β_slow = 1, truncated (floor and ceil of the same point differ by one)
        RopeScaling kimi = new RopeScaling(RopeScaling.Type.YARN, 50_000, 32, 4096, 131072, 1, 1, 1, 1, Double.NaN, true);
        assertFrequencies("kimi-k2", yarn(50_000, 64, 32, 4096, 1, 1, true), kimi.inverseFrequencies(64));

        // β_fast = β_slow without truncation: a zero-width ramp widened by 0.001
        RopeScaling step = new RopeScaling(RopeScaling.Type.YARN, 50_000, 32, 4096, 131072, 1, 1, 0, 0, Double.NaN, false);
        assertFrequencies("zero-width ramp", yarn(50_000, 64, 32, 4096, 1, 1, false), step.inverseFrequencies(64));

        // DeepSeek V4: factor 16 over original 65536, no mscale → 0.1·ln 16 + 1
        RopeScaling dsv4 = new RopeScaling(RopeScaling.Type.YARN, 10_000, 16, 65536, 1048576, 32, 1, 0, 0, Double.NaN, true);
        assertFrequencies("deepseek-v4", yarn(10_000, 64, 16, 65536, 32, 1, true), dsv4.inverseFrequencies(64));
        assertEquals(1.2772589, dsv4.attentionFactor(), 1e-7);
    }

    @Test
    void yarnDefaultsAndOverrides() {
        // no factor: max_position_embeddings / original_max_position_embeddings = 131072 / 4096 = 32
        RopeScaling derived = new RopeScaling(RopeScaling.Type.YARN, 150_000, Double.NaN, 4096, 131072, 32, 1, 0, 0, Double.NaN, false);
        assertEquals(32.0, derived.effectiveFactor());
        assertFrequencies("derived factor", yarn(150_000, 64, 32, 4096, 32, 1, false), derived.inverseFrequencies(64));
        // no original context: it defaults to max_position_embeddings
        RopeScaling noOrig = new RopeScaling(RopeScaling.Type.YARN, 10_000, 4, 0, 2048, 32, 1, 0, 0, Double.NaN, true);
        assertFrequencies("original = max", yarn(10_000, 32, 4, 2048, 32, 1, true), noOrig.inverseFrequencies(32));
        // β given as 0 means the defaults 32 and 1 (transformers' `or`)
        RopeScaling zeros = new RopeScaling(RopeScaling.Type.YARN, 10_000, 4, 1024, 4096, 0, 0, 0, 0, Double.NaN, true);
        assertEquals(32.0, zeros.betaFast());
        assertEquals(1.0, zeros.betaSlow());
        // an explicit attention_factor wins over mscale
        RopeScaling explicit = new RopeScaling(RopeScaling.Type.YARN, 10_000, 4, 1024, 4096, 32, 1, 1, 1, 0.8125, true);
        assertEquals(0.8125f, explicit.attentionFactor());
        assertThrows(IllegalArgumentException.class, () -> noOrig.inverseFrequencies(7));
        assertThrows(IllegalArgumentException.class,
                () -> new RopeScaling(RopeScaling.Type.LINEAR, 10_000, Double.NaN, 0, 2048, 32, 1, 0, 0, Double.NaN, true));
    }

    @Test
    void tableHoldsCosAndSinOfTheFloatAngleTimesTheAttentionFactor() {
        RopeScaling y = new RopeScaling(RopeScaling.Type.YARN, 150_000, 32, 4096, 131072, 32, 1, 0, 0, Double.NaN, false);
        RopeTable table = RopeTable.of(y, 64, 200, RopeTable.Style.HALF);
        float[] inv = y.inverseFrequencies(64);
        double af = 0.1 * Math.log(32) + 1;
        for (int p : new int[]{0, 1, 7, 199}) {
            for (int i = 0; i < 32; i++) {
                double angle = (float) p * inv[i]; // positions · inv_freq in float32, as transformers
                assertEquals(Math.cos(angle) * af, table.cos(p, i), 1e-6, "cos at position " + p + " frequency " + i);
                assertEquals(Math.sin(angle) * af, table.sin(p, i), 1e-6, "sin at position " + p + " frequency " + i);
            }
        }
        assertThrows(IndexOutOfBoundsException.class, () -> table.cos(200, 0));
    }
}
