package org.orbitrl.scheduler.rl;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.OptimizerOps;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;

/**
 * AdamW over a fixed list of named f32 parameters, with the update PyTorch's {@code torch.optim.AdamW}
 * performs (single-tensor path), step {@code t} counted from 1:
 * <pre>
 *   g  = grad · clip                      (global-norm clipping, {@link GradientClipping})
 *   m  = β1·m + (1 − β1)·g
 *   v  = β2·v + (1 − β2)·g²
 *   p  = p · (1 − lr·λ)                   (decoupled weight decay)
 *   p  = p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
 * </pre>
 * Element arithmetic is f32 in a fixed order, scalars are computed in double and rounded once,
 * so a step is bitwise reproducible. State ({@code m}, {@code v} f32, one per parameter, and the
 * step count) is allocated as {@link MemoryCategory#OPTIMIZER_STATE} and exported/imported bit for bit.
 *
 * <p>Before anything is written, the loss and every gradient element are checked: a NaN or
 * infinity skips the step ({@link StepResult.Skipped} names the tensor, index and value) and leaves
 * parameters, gradients and state untouched.
 *
 * <p>Not thread-safe; one trainer thread owns it. The state's memory belongs to the allocator's arena.
 */
public final class AdamW {
    /** State key of the step count (i64 [1]). */
    public static final String STEP_KEY = "step";
    /** State key prefix of first moments. */
    public static final String EXP_AVG = "exp_avg.";
    /** State key prefix of second moments. */
    public static final String EXP_AVG_SQ = "exp_avg_sq.";

    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED;

    private final AdamWConfig config;
    private final List<Parameter> params;
    private final List<Tensor> m; // per parameter, its shape
    private final List<Tensor> v; // per parameter, its shape
    private final TensorAllocator allocator;
    private final Backend device; // null: parameters, gradients and moments are host memory
    private LearningRateSchedule schedule;
    private long step;

    /**
     * @param params    the trainable tensors, unique names
     * @param allocator where the moment buffers come from (category {@code OPTIMIZER_STATE})
     */
    public AdamW(AdamWConfig config, LearningRateSchedule schedule, List<Parameter> params, TensorAllocator allocator) {
        this(config, schedule, params, allocator, null);
    }

    /**
     * As the four-argument constructor, for parameters in a device's memory: the moments come from
     * {@code device.allocator()}, the non-finite check, the gradient norm and the update run on
     * {@code device} ({@link Backend#gradientStats}, {@link Backend#adamw}); the update equals the
     * host's bit for bit, the norm may differ from the host's in the last bits of its double sum.
     */
    public AdamW(AdamWConfig config, LearningRateSchedule schedule, List<Parameter> params, Backend device) {
        this(config, schedule, params, device.allocator(), device);
    }

    private AdamW(AdamWConfig config, LearningRateSchedule schedule, List<Parameter> params, TensorAllocator allocator,
                  Backend device) {
        if (config == null || schedule == null) {
            throw new IllegalArgumentException("AdamW needs a config and a learning-rate schedule");
        }
        if (params.isEmpty()) {
            throw new IllegalArgumentException("AdamW needs at least one parameter");
        }
        Set<String> names = new HashSet<>();
        for (Parameter p : params) {
            if (!names.add(p.name())) {
                throw new IllegalArgumentException("parameter name " + p.name() + " appears twice");
            }
        }
        this.config = config;
        this.schedule = schedule;
        this.params = List.copyOf(params);
        this.allocator = allocator;
        this.device = device;
        this.m = new ArrayList<>();
        this.v = new ArrayList<>();
        for (Parameter p : params) {
            m.add(allocator.allocate(MemoryCategory.OPTIMIZER_STATE, DType.F32, p.value().shape()));
            v.add(allocator.allocate(MemoryCategory.OPTIMIZER_STATE, DType.F32, p.value().shape()));
        }
    }

    /** Steps applied so far (skipped steps do not count). */
    public long stepCount() {
        return step;
    }

    /** The configuration. */
    public AdamWConfig config() {
        return config;
    }

    /** The parameters, in order. */
    public List<Parameter> parameters() {
        return params;
    }

    /** Replaces the learning-rate schedule from the next step on (a live-tunable setting). */
    public void setSchedule(LearningRateSchedule newSchedule) {
        if (newSchedule == null) {
            throw new IllegalArgumentException("learning-rate schedule is missing");
        }
        this.schedule = newSchedule;
    }

    /**
     * One update.
     *
     * @param loss  the loss whose gradients these are (checked for NaN/Inf only)
     * @param grads one f32 gradient per parameter, same order and shapes; not modified
     */
    public StepResult step(double loss, List<Tensor> grads) {
        if (grads.size() != params.size()) {
            throw new IllegalArgumentException(grads.size() + " gradients for " + params.size() + " parameters");
        }
        for (int k = 0; k < params.size(); k++) {
            Tensor g = grads.get(k);
            Parameter p = params.get(k);
            if (g.dtype() != DType.F32 || !Arrays.equals(g.shape(), p.value().shape()) || !g.isContiguous()) {
                throw new IllegalArgumentException("gradient of " + p.name() + " must be contiguous f32"
                        + Arrays.toString(p.value().shape()) + ", got " + g);
            }
        }
        double norm;
        if (device == null) {
            Optional<NonFiniteValue> bad = firstNonFinite(loss, grads);
            if (bad.isPresent()) {
                return new StepResult.Skipped(step + 1, bad.get());
            }
            norm = GradientClipping.globalNorm(grads);
        } else {
            Optional<NonFiniteValue> l = NonFiniteValue.scalar("loss", loss);
            if (l.isPresent()) {
                return new StepResult.Skipped(step + 1, l.get());
            }
            double ss = 0;
            OptimizerOps.GradientStats[] stats = device.gradientStats(grads);   // one wait for the device
            for (int k = 0; k < grads.size(); k++) {
                OptimizerOps.GradientStats st = stats[k];
                if (st.firstNonFinite() >= 0) {
                    float x = allocator.toHost(grads.get(k).reshape(grads.get(k).numel())
                            .slice(0, st.firstNonFinite(), st.firstNonFinite() + 1)).getFloat(0);
                    return new StepResult.Skipped(step + 1, new NonFiniteValue("grad." + params.get(k).name(),
                            st.firstNonFinite(), x));
                }
                ss += st.sumOfSquares();
            }
            norm = Math.sqrt(ss);
        }
        double clip = GradientClipping.coefficient(norm, config.maxGradNorm());
        long t = step + 1;
        double lr = schedule.at(t);
        float clipF = (float) clip;
        float b1 = (float) config.beta1();
        float oneMinusB1 = (float) (1 - config.beta1());
        float b2 = (float) config.beta2();
        float oneMinusB2 = (float) (1 - config.beta2());
        float decay = (float) (1 - lr * config.weightDecay());
        float stepSize = (float) (lr / (1 - Math.pow(config.beta1(), t)));
        float bc2Sqrt = (float) Math.sqrt(1 - Math.pow(config.beta2(), t));
        float eps = (float) config.epsilon();
        boolean clipped = clip < 1;
        OptimizerOps.AdamWStep scalars = new OptimizerOps.AdamWStep(clipped, clipF, b1, oneMinusB1, b2, oneMinusB2, decay,
                stepSize, bc2Sqrt, eps);
        for (int k = 0; k < params.size(); k++) {
            if (device != null) {
                device.adamw(params.get(k).value(), grads.get(k), m.get(k), v.get(k), scalars);
            } else {
                update(params.get(k).value(), grads.get(k), m.get(k), v.get(k), clipped, clipF, b1, oneMinusB1, b2,
                        oneMinusB2, decay, stepSize, bc2Sqrt, eps);
            }
        }
        step = t;
        return new StepResult.Applied(t, lr, norm, clip);
    }

    private static void update(Tensor param, Tensor grad, Tensor mt, Tensor vt, boolean clipped, float clip,
                               float b1, float oneMinusB1, float b2, float oneMinusB2, float decay, float stepSize,
                               float bc2Sqrt, float eps) {
        MemorySegment ps = param.segment();
        MemorySegment gs = grad.segment();
        MemorySegment ms = mt.segment();
        MemorySegment vs = vt.segment();
        long po = param.byteOffset();
        long go = grad.byteOffset();
        long mo = mt.byteOffset();
        long vo = vt.byteOffset();
        long n = param.numel();
        for (long i = 0; i < n; i++) {
            long d = 4 * i;
            float g = gs.get(F32, go + d);
            if (clipped) {
                g *= clip;
            }
            float mi = b1 * ms.get(F32, mo + d) + oneMinusB1 * g;
            float vi = b2 * vs.get(F32, vo + d) + oneMinusB2 * (g * g);
            float p = ps.get(F32, po + d) * decay;
            float denom = (float) Math.sqrt(vi) / bc2Sqrt + eps;
            p -= stepSize * (mi / denom);
            ms.set(F32, mo + d, mi);
            vs.set(F32, vo + d, vi);
            ps.set(F32, po + d, p);
        }
    }

    private Optional<NonFiniteValue> firstNonFinite(double loss, List<Tensor> grads) {
        Optional<NonFiniteValue> l = NonFiniteValue.scalar("loss", loss);
        if (l.isPresent()) {
            return l;
        }
        for (int k = 0; k < grads.size(); k++) {
            Tensor g = grads.get(k);
            MemorySegment seg = g.segment();
            long base = g.byteOffset();
            long n = g.numel();
            for (long i = 0; i < n; i++) {
                float x = seg.get(F32, base + 4 * i);
                if (!Float.isFinite(x)) {
                    return Optional.of(new NonFiniteValue("grad." + params.get(k).name(), i, x));
                }
            }
        }
        return Optional.empty();
    }

    /**
     * A copy of the state: {@value #STEP_KEY} (i64 [1]), and {@code exp_avg.NAME} and
     * {@code exp_avg_sq.NAME} (f32, the parameter's shape) for every parameter, in parameter order.
     * Written to safetensors and read back, it restores the optimizer bit for bit.
     */
    public Map<String, Tensor> exportState() {
        Map<String, Tensor> out = new LinkedHashMap<>();
        Tensor s = Tensor.allocate(java.lang.foreign.Arena.ofAuto(), DType.I64, 1);
        s.setLong(step, 0);
        out.put(STEP_KEY, s);
        for (int k = 0; k < params.size(); k++) {
            out.put(EXP_AVG + params.get(k).name(), hostCopy(m.get(k)));
            out.put(EXP_AVG_SQ + params.get(k).name(), hostCopy(v.get(k)));
        }
        return out;
    }

    /**
     * Replaces the state with {@code state} as {@link #exportState} writes it. Every key must be
     * present with its dtype and shape and no other key may appear; on any mismatch nothing is
     * changed and the error names the key.
     */
    public void importState(Map<String, Tensor> state) {
        Set<String> expected = new HashSet<>();
        expected.add(STEP_KEY);
        for (Parameter p : params) {
            expected.add(EXP_AVG + p.name());
            expected.add(EXP_AVG_SQ + p.name());
        }
        for (String key : state.keySet()) {
            if (!expected.contains(key)) {
                throw new IllegalArgumentException("optimizer state has unexpected key " + key);
            }
        }
        Tensor s = require(state, STEP_KEY, DType.I64, new long[] {1});
        long newStep = s.getLong(0);
        if (newStep < 0) {
            throw new IllegalArgumentException("optimizer state " + STEP_KEY + " is negative: " + newStep);
        }
        for (Parameter p : params) {
            require(state, EXP_AVG + p.name(), DType.F32, p.value().shape());
            require(state, EXP_AVG_SQ + p.name(), DType.F32, p.value().shape());
        }
        for (int k = 0; k < params.size(); k++) {
            allocator.copy(state.get(EXP_AVG + params.get(k).name()), m.get(k));
            allocator.copy(state.get(EXP_AVG_SQ + params.get(k).name()), v.get(k));
        }
        step = newStep;
    }

    /** A host copy of a moment buffer. */
    private Tensor hostCopy(Tensor t) {
        Tensor h = allocator.toHost(t);
        return h == t ? t.to(DType.F32) : h;
    }

    private static Tensor require(Map<String, Tensor> state, String key, DType dtype, long[] shape) {
        Tensor t = state.get(key);
        if (t == null) {
            throw new IllegalArgumentException("optimizer state is missing " + key);
        }
        if (t.dtype() != dtype || !Arrays.equals(t.shape(), shape)) {
            throw new IllegalArgumentException("optimizer state " + key + ": expected " + dtype + Arrays.toString(shape)
                    + ", got " + t);
        }
        return t;
    }
}
