package org.orbitrl.kernels;

/**
 * Precomputed rotary embedding: cos and sin for positions [0, maxPositions) and the
 * {@code rotaryDim/2} frequencies, already multiplied by the scaling's attention factor
 * (as Hugging Face applies YaRN's {@code attention_scaling} to cos and sin).
 *
 * <p>Styles: {@link Style#HALF} pairs channel i with i + rotaryDim/2 ({@code rotate_half}, Llama,
 * Qwen, gpt-oss); {@link Style#INTERLEAVED} pairs 2i with 2i+1 (DeepSeek's original layout).
 */
public final class RopeTable {

    public enum Style { HALF, INTERLEAVED }

    private final int rotaryDim;
    private final int maxPositions;
    private final Style style;
    private final float attentionFactor;
    private final float[] invFreq;
    private final float[] cos; // [maxPositions, rotaryDim/2]
    private final float[] sin; // [maxPositions, rotaryDim/2]

    /**
     * @param invFreq         the rotaryDim/2 inverse frequencies (from {@link RopeScaling#inverseFrequencies})
     * @param attentionFactor multiplies cos and sin (1 unless YaRN)
     */
    public RopeTable(float[] invFreq, float attentionFactor, int maxPositions, Style style) {
        if (invFreq.length == 0 || maxPositions <= 0) {
            throw new IllegalArgumentException("rope table needs frequencies and positions, got " + invFreq.length
                    + " frequencies and " + maxPositions + " positions");
        }
        if ((long) maxPositions * invFreq.length > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("rope table of " + maxPositions + " positions x " + invFreq.length
                    + " frequencies is too large; build it for fewer positions");
        }
        this.rotaryDim = invFreq.length * 2;
        this.maxPositions = maxPositions;
        this.style = style;
        this.attentionFactor = attentionFactor;
        this.invFreq = invFreq.clone();
        int half = invFreq.length;
        this.cos = new float[maxPositions * half];
        this.sin = new float[maxPositions * half];
        for (int p = 0; p < maxPositions; p++) {
            for (int i = 0; i < half; i++) {
                // f32 product as Hugging Face computes it (inv_freq @ positions in float32)
                float angle = (float) p * invFreq[i];
                cos[p * half + i] = (float) Math.cos(angle) * attentionFactor;
                sin[p * half + i] = (float) Math.sin(angle) * attentionFactor;
            }
        }
    }

    public static RopeTable of(RopeScaling scaling, int rotaryDim, int maxPositions, Style style) {
        return new RopeTable(scaling.inverseFrequencies(rotaryDim), scaling.attentionFactor(), maxPositions, style);
    }

    public int rotaryDim() {
        return rotaryDim;
    }

    public int maxPositions() {
        return maxPositions;
    }

    public Style style() {
        return style;
    }

    public float attentionFactor() {
        return attentionFactor;
    }

    public float[] inverseFrequencies() {
        return invFreq.clone();
    }

    public float cos(int position, int i) {
        check(position);
        return cos[position * (rotaryDim / 2) + i];
    }

    public float sin(int position, int i) {
        check(position);
        return sin[position * (rotaryDim / 2) + i];
    }

    /** Raw [maxPositions, rotaryDim/2] tables for kernels (do not modify). */
    public float[] cosTable() {
        return cos;
    }

    public float[] sinTable() {
        return sin;
    }

    private void check(int position) {
        if (position < 0 || position >= maxPositions) {
            throw new IndexOutOfBoundsException("position " + position + " outside the rope table's [0, " + maxPositions + ")");
        }
    }
}
