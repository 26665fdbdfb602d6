package org.orbitrl.scheduler.job;

import org.orbitrl.memory.plan.GpuBudget;
import org.orbitrl.memory.plan.GpuRole;
import org.orbitrl.memory.plan.MemoryPlan;
import org.orbitrl.memory.plan.MemoryPlanner;
import org.orbitrl.memory.plan.NodeSpec;
import org.orbitrl.memory.plan.ParallelLayout;
import org.orbitrl.memory.plan.PlanRequest;
import org.orbitrl.memory.plan.PlanTable;
import org.orbitrl.model.spec.ModelSpec;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * What each device of a job does, from its {@code placement:} block and the devices the daemon
 * gave it: the first {@code rollout_devices} only generate, the rest train (every device does
 * both when it is 0). Within each group, consecutive devices form model-parallel groups of
 * {@code lcm(tp, ep)} ranks (tensor-parallel groups of tp, expert-parallel groups of ep); the groups
 * side by side are data-parallel replicas. {@link #plan} checks the layout against the model and
 * the memory planner and gives every device its own budget, before anything is loaded.
 *
 * @param assignments one per device, in the order the daemon gave them
 */
public record JobPlacement(PlacementSpec spec, List<Assignment> assignments) {

    /**
     * One device's part.
     *
     * @param rank   rank within its role group (rollout or training; the whole node when colocated)
     * @param tpRank rank within its tensor-parallel group
     * @param epRank rank within its expert-parallel group
     * @param dpRank index of its model-parallel replica (data-parallel rank)
     */
    public record Assignment(String device, GpuRole role, int rank, int tpRank, int epRank, int dpRank) {
    }

    public JobPlacement {
        assignments = List.copyOf(assignments);
    }

    /** Assigns roles and ranks to {@code devices} (exactly {@code placement.devices} of them). */
    public static JobPlacement of(PlacementSpec p, List<String> devices) {
        if (devices.size() != p.devices()) {
            throw new IllegalArgumentException("placement needs " + p.devices() + " devices, was given " + devices.size()
                    + ": " + devices);
        }
        int m = modelGroup(p);
        List<Assignment> out = new ArrayList<>();
        for (int i = 0; i < devices.size(); i++) {
            boolean rollout = i < p.rolloutDevices();
            GpuRole role = p.rolloutDevices() == 0 ? GpuRole.COLOCATED : rollout ? GpuRole.ROLLOUT : GpuRole.TRAIN;
            int rank = rollout ? i : i - p.rolloutDevices();
            out.add(new Assignment(devices.get(i), role, rank, rank % p.tensorParallel(), rank % p.expertParallel(),
                    rank / m));
        }
        return new JobPlacement(p, out);
    }

    /** Ranks of one model-parallel group: the least common multiple of tp and ep. */
    static int modelGroup(PlacementSpec p) {
        int a = p.tensorParallel();
        int b = p.expertParallel();
        int g = a;
        for (int x = b; x != 0; ) {
            int t = g % x;
            g = x;
            x = t;
        }
        return a / g * b;
    }

    /** The runtime layout of one model-parallel group (what every rank loads its share with). */
    public org.orbitrl.model.parallel.ParallelLayout modelLayout() {
        return new org.orbitrl.model.parallel.ParallelLayout(modelGroup(spec), spec.tensorParallel(), spec.expertParallel());
    }

    /** The same layout as the memory planner describes it. */
    public ParallelLayout plannerLayout() {
        return spec.rolloutDevices() == 0 ? ParallelLayout.colocated(spec.expertParallel(), spec.tensorParallel())
                : ParallelLayout.split(spec.expertParallel(), spec.tensorParallel(), spec.rolloutDevices(),
                spec.trainDevices());
    }

    /**
     * This daemon's node index in a multi-node job: the position in {@code hosts} of the first of
     * {@code localNames} listed there. Throws when none is.
     */
    public int nodeRank(Set<String> localNames) {
        if (spec.hosts().isEmpty()) {
            return 0;
        }
        for (int i = 0; i < spec.hosts().size(); i++) {
            if (localNames.contains(spec.hosts().get(i))) {
                return i;
            }
        }
        throw new IllegalArgumentException("this node (" + localNames + ") is not one of the job's hosts " + spec.hosts());
    }

    /**
     * Checks the layout against the model (heads, key/value heads, dense MLP width and vocabulary
     * split by tp; experts by ep) and plans memory per device with {@code request}'s model, base,
     * adapter and batch, on devices of {@code bytesPerDevice}. Refuses a job that does not fit, with
     * the planner's table, before anything is loaded.
     */
    public JobPlan plan(PlanRequest request, long bytesPerDevice) throws PlanRefusedException {
        ModelSpec s = request.spec();
        boolean dense = false;
        for (int i = 0; i < s.numLayers(); i++) {
            dense |= !s.isMoeLayer(i);
        }
        org.orbitrl.model.parallel.ParallelLayout runtime = modelLayout();
        int experts = s.moe() == null ? 0 : s.moe().numExperts();
        NodeSpec node = new NodeSpec(spec.backend().name().toLowerCase() + "-devices", spec.devices(), bytesPerDevice);
        try {
            runtime.validate(s.modelType(), s.numHeads(), s.numKvHeads(), s.intermediateSize(), dense, experts);
            if (s.vocabSize() % spec.tensorParallel() != 0) {
                throw new IllegalArgumentException("vocab_size " + s.vocabSize() + " is not divisible by tensor_parallel "
                        + spec.tensorParallel());
            }
            plannerLayout().validate(s, node);
        } catch (IllegalArgumentException e) {
            throw new PlanRefusedException("placement " + plannerLayout() + " cannot run " + s.modelType() + ": "
                    + e.getMessage());
        }
        MemoryPlan plan = MemoryPlanner.plan(request.withNode(node, plannerLayout()));
        String table = PlanTable.render(plan);
        if (!plan.fits()) {
            GpuBudget worst = plan.tightest();
            throw new PlanRefusedException("placement " + plannerLayout() + ": the " + worst.role().label()
                    + " devices overflow in " + worst.overflowCategory() + ":\n" + table);
        }
        Map<String, Map<org.orbitrl.kernels.MemoryCategory, Long>> bytes = new LinkedHashMap<>();
        for (Assignment a : assignments) {
            bytes.put(a.device(), plan.budget(a.role()).bytes());
        }
        return new JobPlan(bytes, table);
    }
}
