package org.orbitrl.scheduler.rl;

import java.util.Optional;

/**
 * The first NaN or infinity found in a named tensor (or in the scalar loss, with index -1).
 *
 * @param tensor name of the tensor, e.g. {@code "loss"} or an adapter parameter's name
 * @param index  flat element index, or -1 for a scalar
 * @param value  the offending value
 */
public record NonFiniteValue(String tensor, long index, double value) {

    /** The first non-finite element of {@code values}, if any. */
    public static Optional<NonFiniteValue> scan(String tensor, float[] values) {
        for (int i = 0; i < values.length; i++) {
            if (!Float.isFinite(values[i])) {
                return Optional.of(new NonFiniteValue(tensor, i, values[i]));
            }
        }
        return Optional.empty();
    }

    /** {@code value} if it is not finite. */
    public static Optional<NonFiniteValue> scalar(String name, double value) {
        return Double.isFinite(value) ? Optional.empty() : Optional.of(new NonFiniteValue(name, -1, value));
    }

    @Override
    public String toString() {
        return tensor + (index < 0 ? "" : "[" + index + "]") + " = " + value;
    }
}
