package org.orbitrl.kernels;

/**
 * Token sampling from rows of logits: the host implementation of {@link Backend#sampleTokens} and
 * the reference of the device kernels. Every draw is a pure function of the logits row and its
 * request fields, so two backends given the same logits draw the same token whatever the batch.
 *
 * <p>Per request, with {@code m} the row's maximum and {@code z_i = (x_i − m) / T} in f32:
 * <ul>
 *   <li>Greedy ({@code T ≤ 0}): the largest logit, ties to the lower id; sampled log-prob 0.</li>
 *   <li>Filters on z (each a threshold on the value, ties kept together): top-k keeps
 *       {@code z_i ≥} the k-th largest z; top-p keeps {@code z_i ≥ t} for the largest t whose mass
 *       {@code Σ_{z_j ≥ t} e^{z_j}} reaches {@code topP · Σ_j e^{z_j}} (sums in double); min-p keeps
 *       {@code e^{z_i} ≥ minP} (double). The kept set is the intersection; it always holds the top
 *       token.</li>
 *   <li>The draw is Gumbel-max: the kept token maximising {@code z_i − log(−log u_i)} (double; ties
 *       to the lower id), {@code u_i ∈ (0, 1)} from a counter-based generator keyed by
 *       {@link #streamKey}(seed, sample, position) and the token id. That is a draw from the kept
 *       tokens renormalised. A token with {@code z_i < −}{@link #NOISE_CUTOFF} can never win (the
 *       noise lies in [−3.6, 36.8]) and is skipped.</li>
 *   <li>Sampled log-prob: {@code z_token − log Σ_{kept} e^{z}} (double, rounded to f32).</li>
 * </ul>
 * Filters off: {@code topK ≤ 0} or {@code ≥ V}, {@code topP ≥ 1}, {@code minP ≤ 0}.
 */
public final class SamplingOps {
    /** Request fields, field-major: requests i32 [FIELDS, B]. */
    public static final int ROW = 0;
    public static final int TOP_K = 1;
    public static final int KEY_LO = 2;
    public static final int KEY_HI = 3;
    public static final int TEMPERATURE = 4; // f32 bits
    public static final int TOP_P = 5;       // f32 bits
    public static final int MIN_P = 6;       // f32 bits
    public static final int FIELDS = 7;

    /** Below this z a token cannot win the Gumbel-max draw (see the class comment). */
    public static final float NOISE_CUTOFF = 41f;

    private SamplingOps() {
    }

    /** splitmix64's finaliser. */
    public static long mix(long x) {
        x = (x ^ (x >>> 30)) * 0xBF58476D1CE4E5B9L;
        x = (x ^ (x >>> 27)) * 0x94D049BB133111EBL;
        return x ^ (x >>> 31);
    }

    /** The random stream of one draw: request seed, sample index within the request, token position. */
    public static long streamKey(long seed, int sample, int position) {
        long k = mix(seed + 0x9E3779B97F4A7C15L * (sample + 1L));
        return mix(k + 0xD1B54A32D192ED03L * (position + 1L));
    }

    /** u_i ∈ (0, 1) of token {@code id} in stream {@code key}: 53 random bits, centred in their cell. */
    public static double uniform(long key, int id) {
        long h = mix(key ^ (0x9E3779B97F4A7C15L * (id + 1L)));
        return ((h >>> 11) + 0.5) * 0x1.0p-53;
    }

    /** The Gumbel noise {@code −log(−log u)} of token {@code id} in stream {@code key}. */
    public static double gumbel(long key, int id) {
        return -Math.log(-Math.log(uniform(key, id)));
    }

    /** Writes one request's fields into column {@code b} of host requests i32 [FIELDS, B]. */
    public static void setRequest(Tensor requests, int b, int row, float temperature, int topK, float topP, float minP, long key) {
        requests.setLong(row, ROW, b);
        requests.setLong(topK, TOP_K, b);
        requests.setLong((int) key, KEY_LO, b);
        requests.setLong((int) (key >>> 32), KEY_HI, b);
        requests.setLong(Float.floatToRawIntBits(temperature), TEMPERATURE, b);
        requests.setLong(Float.floatToRawIntBits(topP), TOP_P, b);
        requests.setLong(Float.floatToRawIntBits(minP), MIN_P, b);
    }

    /** A float's bits as an int that orders as the float does (for finite values and infinities). */
    public static int orderedKey(float f) {
        int bits = Float.floatToRawIntBits(f);
        return bits >= 0 ? bits : bits ^ 0x7fffffff;
    }

    /**
     * tokens i32 [B] and sampledLogp f32 [B] for logits f32 [R, V] and requests i32 [FIELDS, B]
     * (host memory). See the class comment.
     */
    public static void sampleTokens(Tensor logits, Tensor requests, Tensor tokens, Tensor sampledLogp) {
        int bsz = check(logits, requests, tokens, sampledLogp);
        int v = logits.size(-1);
        float[] z = new float[v];
        for (int b = 0; b < bsz; b++) {
            int r = field(requests, ROW, b);
            if (r < 0 || r >= logits.size(0)) {
                throw new IndexOutOfBoundsException("sampleTokens: request " + b + " reads row " + r + " of logits " + logits);
            }
            float[] x = logits.select(0, r).contiguous().toFloatArray();
            float t = Float.intBitsToFloat(field(requests, TEMPERATURE, b));
            long key = (field(requests, KEY_LO, b) & 0xFFFFFFFFL) | ((long) field(requests, KEY_HI, b) << 32);
            Draw d = draw(x, z, t, field(requests, TOP_K, b), Float.intBitsToFloat(field(requests, TOP_P, b)),
                    Float.intBitsToFloat(field(requests, MIN_P, b)), key);
            tokens.reshape(bsz).setLong(d.token, b);
            sampledLogp.reshape(bsz).setFloat(d.sampledLogp, b);
        }
    }

    private static int field(Tensor requests, int field, int b) {
        return (int) requests.getLong(field, b);
    }

    private record Draw(int token, float sampledLogp) {
    }

    /** One draw from row x [V]; z is scratch [V]. */
    private static Draw draw(float[] x, float[] z, float t, int topK, float topP, float minP, long key) {
        int v = x.length;
        float m = Float.NEGATIVE_INFINITY;
        int argmax = 0;
        for (int k = 0; k < v; k++) {
            if (x[k] > m) {
                m = x[k];
                argmax = k;
            }
        }
        if (!(t > 0)) {
            return new Draw(argmax, 0f);
        }
        double total = 0;
        for (int k = 0; k < v; k++) {
            z[k] = (x[k] - m) / t;
            total += Math.exp(z[k]);
        }
        int threshold = Integer.MIN_VALUE;     // kept: orderedKey(z) >= threshold
        if (topK > 0 && topK < v) {
            threshold = Math.max(threshold, largestKey(z, key0 -> count(z, key0) >= topK));
        }
        if (topP < 1) {
            double need = topP * total;
            threshold = Math.max(threshold, largestKey(z, key0 -> mass(z, key0) >= need));
        }
        double kept = 0;
        double best = Double.NEGATIVE_INFINITY;
        int token = argmax;
        for (int k = 0; k < v; k++) {
            if (!keeps(z[k], threshold, minP)) {
                continue;
            }
            kept += Math.exp(z[k]);
            if (z[k] < -NOISE_CUTOFF) {
                continue;
            }
            double score = z[k] + gumbel(key, k);
            if (score > best) {
                best = score;
                token = k;
            }
        }
        return new Draw(token, (float) (z[token] - Math.log(kept)));
    }

    private static boolean keeps(float z, int threshold, float minP) {
        return orderedKey(z) >= threshold && (!(minP > 0) || Math.exp(z) >= minP);
    }

    private static long count(float[] z, int key) {
        long c = 0;
        for (float f : z) {
            if (orderedKey(f) >= key) {
                c++;
            }
        }
        return c;
    }

    private static double mass(float[] z, int key) {
        double s = 0;
        for (float f : z) {
            if (orderedKey(f) >= key) {
                s += Math.exp(f);
            }
        }
        return s;
    }

    /**
     * The largest ordered key in [key(−∞), key(0)] for which {@code holds} (monotone: true up to some
     * key, false above); key(−∞) when none holds above it.
     */
    private static int largestKey(float[] z, java.util.function.IntPredicate holds) {
        long lo = orderedKey(Float.NEGATIVE_INFINITY);   // holds here (every token counts)
        long hi = orderedKey(0f);                        // the maximum z
        while (lo < hi) {
            long mid = lo + (hi - lo + 1) / 2;
            if (holds.test((int) mid)) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        return (int) lo;
    }

    private static int check(Tensor logits, Tensor requests, Tensor tokens, Tensor sampledLogp) {
        if (logits.dtype() != DType.F32 || logits.rank() != 2) {
            throw new IllegalArgumentException("sampleTokens: logits must be f32 [R, V], got " + logits);
        }
        if (requests.dtype() != DType.I32 || requests.rank() != 2 || requests.size(0) != FIELDS) {
            throw new IllegalArgumentException("sampleTokens: requests must be i32 [" + FIELDS + ", B], got " + requests);
        }
        int b = requests.size(1);
        if (tokens.dtype() != DType.I32 || tokens.numel() != b) {
            throw new IllegalArgumentException("sampleTokens: tokens must be i32 [" + b + "], got " + tokens);
        }
        if (sampledLogp.dtype() != DType.F32 || sampledLogp.numel() != b) {
            throw new IllegalArgumentException("sampleTokens: sampledLogp must be f32 [" + b + "], got " + sampledLogp);
        }
        return b;
    }
}
