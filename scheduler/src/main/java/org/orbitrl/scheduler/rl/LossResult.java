package org.orbitrl.scheduler.rl;

import java.util.Optional;
import org.orbitrl.kernels.Tensor;

/**
 * A loss value, its gradient with respect to every current token log-probability, and statistics.
 * The model's backward pass starts from {@link #grad}.
 *
 * @param loss      the (normalised) loss of this batch or micro-batch
 * @param sequences rows of {@code grad}
 * @param tokens    columns of {@code grad}
 * @param grad      [sequences, tokens] d loss / d logp; 0 at masked-out positions
 * @param stats     statistics of the tokens seen
 */
public record LossResult(double loss, int sequences, int tokens, float[] grad, LossStats stats) {

    public LossResult {
        if (grad.length != sequences * tokens) {
            throw new IllegalArgumentException("gradient of " + grad.length + " values is not [" + sequences + ", "
                    + tokens + "]");
        }
    }

    /** The sum of two losses over the same tokens (e.g. policy loss plus KL penalty). */
    public LossResult plus(LossResult o) {
        if (o.sequences != sequences || o.tokens != tokens) {
            throw new IllegalArgumentException("cannot add a loss over [" + o.sequences + ", " + o.tokens
                    + "] to one over [" + sequences + ", " + tokens + "]");
        }
        float[] g = new float[grad.length]; // [sequences, tokens]
        for (int i = 0; i < g.length; i++) {
            g[i] = grad[i] + o.grad[i];
        }
        return new LossResult(loss + o.loss, sequences, tokens, g, stats.plus(o.stats));
    }

    /** The gradient as an f32 tensor [sequences, tokens] (a copy). */
    public Tensor gradTensor() {
        return Tensor.of(grad, sequences, tokens);
    }

    /** The first NaN or infinity in the loss, then in the gradient ({@code "dloss/dlogp"}). */
    public Optional<NonFiniteValue> firstNonFinite() {
        Optional<NonFiniteValue> l = NonFiniteValue.scalar("loss", loss);
        return l.isPresent() ? l : NonFiniteValue.scan("dloss/dlogp", grad);
    }
}
