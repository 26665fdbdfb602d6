package org.orbitrl.memory.plan;

import java.util.Arrays;

/**
 * {@code count} tensors of one shape and role, e.g. the 60 x 384 routed-expert {@code gate_up}
 * matrices of Kimi-K2 as {@code [4096, 7168] x 23040}. Matrices are {@code [out, in]} as a
 * {@code Linear} stores them, whatever layout the checkpoint uses, so that a group-wise format
 * groups along {@code in} (the reduction dimension).
 *
 * @param name   a readable name in Hugging Face terms ({@code mlp.experts.gate_up_proj})
 * @param family what the tensors are for
 * @param shape  shape of one tensor: {@code [out, in]} for a matrix, {@code [n]} for a vector,
 *               {@code [rows, cols]} for a 2-D parameter that is not a projection (see {@link #linear})
 * @param count  number of such tensors in the model
 * @param linear true for projection weights (the tensors a quantized format and an adapter apply to)
 * @param buffer true for a non-trainable buffer saved with the weights (router score-correction
 *               bias, hash-routing table): counted in memory, not in the parameter count
 * @param f32    true for a parameter the model holds in f32 whatever the checkpoint stores (a projection's bias, which
 *               the kernels add in f32; gpt-oss's attention sinks; DeepSeek V4's small tensors, which its host
 *               operations read as f32 arrays)
 */
public record WeightGroup(String name, ParamFamily family, long[] shape, long count, boolean linear, boolean buffer,
                          boolean f32) {

    public WeightGroup {
        if (name == null || family == null) {
            throw new IllegalArgumentException("weight group needs a name and a family");
        }
        shape = shape.clone();
        if (shape.length < 1 || shape.length > 2 || Arrays.stream(shape).anyMatch(d -> d <= 0) || count < 0) {
            throw new IllegalArgumentException("weight group " + name + ": bad shape " + Arrays.toString(shape)
                    + " x " + count);
        }
        if (linear && shape.length != 2) {
            throw new IllegalArgumentException("weight group " + name + " is a projection but not a matrix");
        }
        if (f32 && (linear || buffer)) {
            throw new IllegalArgumentException("weight group " + name + ": only a parameter is held in f32 by rule");
        }
    }

    public WeightGroup(String name, ParamFamily family, long[] shape, long count, boolean linear, boolean buffer) {
        this(name, family, shape, count, linear, buffer, false);
    }

    /** A projection weight {@code [out, in]}. */
    public static WeightGroup linear(String name, ParamFamily family, long out, long in, long count) {
        return new WeightGroup(name, family, new long[] {out, in}, count, true, false);
    }

    /** A parameter that is not a projection: a norm weight, a bias, a sink, a mixing table. */
    public static WeightGroup param(String name, ParamFamily family, long count, long... shape) {
        return new WeightGroup(name, family, shape, count, false, false);
    }

    /** A parameter that is not a projection, held in f32 whatever the checkpoint stores. */
    public static WeightGroup f32Param(String name, ParamFamily family, long count, long... shape) {
        return new WeightGroup(name, family, shape, count, false, false, true);
    }

    /** A buffer saved with the weights but not trained or counted as a parameter. */
    public static WeightGroup buffer(String name, ParamFamily family, long count, long... shape) {
        return new WeightGroup(name, family, shape, count, false, true);
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    /** Rows of one tensor ({@code out} of a matrix, 1 for a vector). */
    public long rows() {
        return shape.length == 2 ? shape[0] : 1;
    }

    /** Columns of one tensor ({@code in} of a matrix, the length of a vector). */
    public long cols() {
        return shape[shape.length - 1];
    }

    /** Elements of one tensor. */
    public long numelEach() {
        return rows() * cols();
    }

    /** Elements of all {@code count} tensors. */
    public long numel() {
        return Math.multiplyExact(numelEach(), count);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof WeightGroup g && name.equals(g.name) && family == g.family && Arrays.equals(shape, g.shape)
                && count == g.count && linear == g.linear && buffer == g.buffer && f32 == g.f32;
    }

    @Override
    public int hashCode() {
        return name.hashCode() * 31 + Arrays.hashCode(shape) + Long.hashCode(count);
    }

    @Override
    public String toString() {
        return name + " " + Arrays.toString(shape) + " x " + count + " (" + family.label() + (buffer ? ", buffer" : "") + (f32 ? ", f32" : "") + ")";
    }
}
