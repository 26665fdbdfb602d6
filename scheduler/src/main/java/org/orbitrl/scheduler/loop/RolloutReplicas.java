package org.orbitrl.scheduler.loop;

import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterSlots;
import org.orbitrl.scheduler.rollout.Completion;
import org.orbitrl.scheduler.rollout.Request;
import org.orbitrl.scheduler.rollout.RolloutEngine;

import java.util.ArrayList;
import java.util.List;
import java.util.function.IntFunction;

/**
 * The job's rollout engines: one a rollout device ({@code placement: {devices: k + m, rollout_devices: k}}), each over its
 * own copy of the base (a view of the trainer's weights on the CPU's logical devices), or one a trainer (one device, or
 * data-parallel replicas), each over a view of its trainer's weights; every engine with its own KV cache and two adapter
 * slots. A call's requests are split over the engines in contiguous shares of whole prompts (a prompt's samples share
 * its cache blocks), generated at once, each engine on a thread of its own, and returned in request order. Each sample's
 * random stream comes from its request's seed, so where the kernels are batch-invariant (the CPU's, exact mode's) a
 * request's samples are the same whichever engine draws them beside whichever others; the default CUDA kernels may
 * differ in the last bits with the batch. Each adapter version is published into every engine's idle slot.
 */
final class RolloutReplicas implements AutoCloseable {

    /**
     * One engine: the device it runs on, the backend it computes on (its own, or its trainer's), its engine and slots, and
     * what it owns beyond them (its backend and its copy of the base, closed after the engine), or null.
     *
     * @param ownStream true when the slots are written on a publishing stream of the engine's own (never the stream
     *                  it computes on) rather than the trainer's, so a publication waits for the trainer's last update
     *                  before it copies and for the copy after
     * @param fence     waits for the copies enqueued on the publishing stream (nothing where copies are synchronous)
     */
    record Replica(String device, org.orbitrl.kernels.Backend backend, RolloutEngine engine, AdapterSlots slots,
                   boolean ownStream, Runnable fence,
                   AutoCloseable owned) {
    }

    private final List<Replica> replicas;
    private final Runnable trainerFence;
    private final RankThreads threads;   // one an engine when there are several (null with one)

    /**
     * @param trainerFence waits for the trainers' device work (their last optimizer update), run before a publication's
     *                     copies into slots on another stream
     */
    RolloutReplicas(List<Replica> replicas, Runnable trainerFence, String jobName) {
        if (replicas.isEmpty()) {
            throw new IllegalArgumentException("job " + jobName + ": no rollout engine");
        }
        this.replicas = List.copyOf(replicas);
        this.trainerFence = trainerFence;
        // engines share nothing: a failing one has no other to release
        this.threads = replicas.size() > 1 ? new RankThreads("orbit-rollout-" + jobName, replicas.size(), () -> { }) : null;
    }

    int size() {
        return replicas.size();
    }

    List<Replica> replicas() {
        return replicas;
    }

    /**
     * The contiguous share of {@code requests} engine {@code r} of {@code engines} generates: requests
     * {@code [r·R/k, (r+1)·R/k)}, so the shares' prompt counts differ by at most one.
     */
    static int[] shareBounds(int requests, int engines, int r) {
        return new int[]{(int) ((long) r * requests / engines), (int) ((long) (r + 1) * requests / engines)};
    }

    /**
     * Generates every request, each engine its share at once; returns the samples in request order (a request's
     * samples in sample order), as one engine's {@link RolloutEngine#generate} would. An engine that fails fails the call,
     * naming its device, once the other engines have finished their shares.
     */
    List<Completion> generate(List<Request> requests) {
        if (replicas.size() == 1) {
            return replicas.get(0).engine().generate(requests);
        }
        int k = replicas.size();
        try {
            List<Completion> out = new ArrayList<>();
            threads.all(r -> {
                int[] b = shareBounds(requests.size(), k, r);
                return b[0] == b[1] ? List.<Completion>of() : replicas.get(r).engine().generate(requests.subList(b[0], b[1]));
            }).forEach(out::addAll);
            return out;
        } catch (RankThreads.RankFailure f) {
            throw new IllegalStateException("rollout engine " + f.rank() + " of " + k + " (" + replicas.get(f.rank()).device()
                    + "): " + f.getMessage(), f.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted waiting for the rollout engines", e);
        }
    }

    /** The engines' counters summed (captured graphs and their arenas over all engines). */
    RolloutEngine.Stats stats() {
        long steps = 0, generated = 0, prefilled = 0, preemptions = 0, aborted = 0, graphSteps = 0, arena = 0, evictions = 0;
        int graphs = 0;
        for (Replica r : replicas) {
            RolloutEngine.Stats s = r.engine().stats();
            steps += s.steps();
            generated += s.generatedTokens();
            prefilled += s.prefillTokens();
            preemptions += s.preemptions();
            aborted += s.aborted();
            graphSteps += s.graphSteps();
            graphs += s.graphs();
            arena += s.graphArenaBytes();
            evictions += s.graphEvictions();
        }
        return new RolloutEngine.Stats(steps, generated, prefilled, preemptions, aborted, graphSteps, graphs, arena, evictions);
    }

    /** Lets a published version take effect on idle engines (their next step would otherwise). */
    void beginStep() {
        replicas.forEach(r -> r.slots().beginStep());
    }

    /**
     * Copies the trainer's adapter into every engine's idle slot as {@code version} (only the adapter moves), engine r's
     * from {@code sourceOf(r)} (the trainer on its device where each engine has one, else the first): after the trainers'
     * last update where a slot is written on another stream, and complete when this returns. Returns the bytes copied,
     * over all engines.
     */
    long publish(IntFunction<Adapter> sourceOf, long version) throws InterruptedException {
        if (replicas.stream().anyMatch(Replica::ownStream)) {
            trainerFence.run();
        }
        long bytes = 0;
        for (int r = 0; r < replicas.size(); r++) {
            bytes += replicas.get(r).slots().publish(sourceOf.apply(r), version);
        }
        for (Replica r : replicas) {
            r.fence().run();
        }
        return bytes;
    }

    /** The threads (none generates after this), the engines, then what each owns (its copy of the base, its backend). */
    @Override
    public void close() {
        if (threads != null) {
            threads.close();
        }
        List<AutoCloseable> owned = new ArrayList<>();
        for (Replica r : replicas) {
            owned.add(r.engine());
            owned.add(r.owned());
        }
        Closing.orThrow(owned.toArray(AutoCloseable[]::new));
    }
}
