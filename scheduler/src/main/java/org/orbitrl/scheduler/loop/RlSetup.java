package org.orbitrl.scheduler.loop;

import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.LoraAdapter;
import org.orbitrl.model.adapter.OftAdapter;
import org.orbitrl.model.adapter.OftSettings;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.scheduler.job.AdapterKind;
import org.orbitrl.scheduler.job.AdapterSpec;
import org.orbitrl.scheduler.job.Algorithm;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.TaskSpec;
import org.orbitrl.scheduler.rl.AdvantageEstimator;
import org.orbitrl.scheduler.rl.DrGrpoAdvantage;
import org.orbitrl.scheduler.rl.GrpoAdvantage;
import org.orbitrl.scheduler.rl.GspoLoss;
import org.orbitrl.scheduler.rl.KlPenalty;
import org.orbitrl.scheduler.rl.LearningRateSchedule;
import org.orbitrl.scheduler.rl.LossNormalisation;
import org.orbitrl.scheduler.rl.PolicyLoss;
import org.orbitrl.scheduler.rl.PpoClipLoss;
import org.orbitrl.scheduler.rl.TrainingLoss;
import org.orbitrl.scheduler.task.Addition;
import org.orbitrl.scheduler.task.Countdown;
import org.orbitrl.scheduler.task.JsonlTask;
import org.orbitrl.scheduler.task.Sorting;
import org.orbitrl.scheduler.task.Task;

import java.util.ArrayList;
import java.util.List;

/** Turns the job file's choices into the objects the RL loop runs with. */
final class RlSetup {
    private RlSetup() {
    }

    /** The PEFT adapter config of the job's adapter section. */
    static AdapterConfig adapterConfig(AdapterSpec a) {
        if (a.type() == AdapterKind.LORA) {
            List<String> params = new ArrayList<>();
            if (a.expertTargets().contains("gate_proj") || a.expertTargets().contains("up_proj")) {
                params.add("mlp.experts.gate_up_proj");
            }
            if (a.expertTargets().contains("down_proj")) {
                params.add("mlp.experts.down_proj");
            }
            return AdapterConfig.lora(a.rank(), a.alpha(), a.targets(), params);
        }
        return AdapterConfig.oft(OftSettings.ofBlockSize(a.oftBlockSize()), a.targets());
    }

    /**
     * A fresh adapter of the job's config attached to {@code model}; seeded. {@code trains}: with gradient buffers (a
     * trainer's); without, for forward passes only (a rollout engine's slot, which the planner gives no gradients).
     */
    static Adapter newAdapter(AdapterConfig cfg, AdapterTargets model, TensorAllocator allocator, long seed, boolean trains) {
        return cfg.type().equals("LORA") ? LoraAdapter.create(cfg, model, allocator, seed, trains)
                : OftAdapter.create(cfg, model, allocator, trains);
    }

    static AdvantageEstimator advantages(Algorithm a) {
        return a == Algorithm.DR_GRPO ? new DrGrpoAdvantage() : GrpoAdvantage.standard();
    }

    static TrainingLoss loss(JobSpec spec) {
        var alg = spec.algorithm();
        PolicyLoss policy = alg.name() == Algorithm.GSPO ? new GspoLoss(alg.clipLow(), alg.clipHigh())
                : new PpoClipLoss(alg.clipLow(), alg.clipHigh());
        KlPenalty kl = spec.kl().coef() == 0 ? null : new KlPenalty(
                org.orbitrl.scheduler.rl.KlEstimator.valueOf(spec.kl().estimator().name()), spec.kl().coef());
        return new TrainingLoss(policy, kl);
    }

    /** Dr.GRPO divides by a constant (the batch's token budget), the others average over tokens. */
    static LossNormalisation normalisation(Algorithm a) {
        return a == Algorithm.DR_GRPO ? LossNormalisation.FIXED_CONSTANT
                : a == Algorithm.GSPO ? LossNormalisation.SEQUENCE_MEAN : LossNormalisation.TOKEN_MEAN;
    }

    static LearningRateSchedule schedule(JobSpec spec, double lr) {
        var o = spec.optimizer();
        return switch (o.schedule()) {
            case CONSTANT -> new LearningRateSchedule.Constant(lr);
            case WARMUP_COSINE -> new LearningRateSchedule.WarmupCosine(lr, o.warmupSteps(), spec.steps(), o.minLrRatio());
        };
    }

    static Task task(TaskSpec t, int evalSize) throws JobException {
        return switch (t.kind()) {
            case ADDITION -> new Addition(t.digits());
            case SORT -> new Sorting(t.listLength(), t.maxValue());
            case COUNTDOWN -> new Countdown(t.numbers(), t.maxTarget());
            case JSONL -> {
                try {
                    yield JsonlTask.load(t.trainPath(), t.evalPath(),
                            org.orbitrl.scheduler.task.ReferenceFormat.valueOf(t.answerFormat().name()), evalSize,
                            org.orbitrl.scheduler.task.RewardWeights.DEFAULT);
                } catch (Exception e) {
                    throw new JobException("task: " + e.getMessage(), e);
                }
            }
        };
    }
}
