package org.orbitrl.model.arch;

/**
 * The host step of a sparse block's backward for one expert: its output gradient and the
 * gradient of each of its routing weights, from d out and the expert's unweighted output.
 */
final class RoutedOutputGrad {
    private RoutedOutputGrad() {
    }

    /**
     * For expert e's tokens (grouped rows i with token {@code rows[i]} and weight {@code w[i]}):
     * returns d ye [count, hidden] = w[i] · dout[row], and writes d loss / d w[i] = dout[row] · ye[i]
     * into {@code dWeight} at the token-major routing slot.
     *
     * @param dout    [N, hidden] on the host
     * @param ye      [count, hidden] the expert's unweighted output, on the host
     * @param dWeight [N*k] token-major
     */
    static float[] of(ExpertGroups groups, int e, float[] dout, float[] ye, int hidden, float[] dWeight) {
        int cnt = groups.count(e);
        int[] rows = groups.tokenArray(e);
        float[] w = groups.weightArray(e);
        float[] dye = new float[cnt * hidden];
        for (int i = 0; i < cnt; i++) {
            float dot = 0;
            for (int c = 0; c < hidden; c++) {
                dye[i * hidden + c] = w[i] * dout[rows[i] * hidden + c];
                dot += dout[rows[i] * hidden + c] * ye[i * hidden + c];
            }
            dWeight[groups.slot(e, i)] = dot;
        }
        return dye;
    }
}
