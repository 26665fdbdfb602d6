package org.orbitrl.scheduler.loop;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.kernels.cuda.CudaBackend;
import org.orbitrl.kernels.comm.Communicator;
import org.orbitrl.kernels.comm.LocalGroup;
import org.orbitrl.kernels.comm.NcclCommunicator;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.arch.Trainable;
import org.orbitrl.model.parallel.AdapterParallel;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.rl.Normaliser;

import java.util.ArrayList;
import java.util.List;

/**
 * The job's trainers: one, or one a training device ({@code placement.devices} minus {@code rollout_devices}), each over
 * its own copy of the base with the same adapter and optimizer state. A step's samples are split over them in contiguous
 * shares of whole groups, each share normalised as part of the whole batch; every trainer runs its share's forward and
 * backward at once on a thread of its own, the adapter's gradients are summed over the trainers (NCCL between GPUs; the
 * host's logical ranks on the CPU, or staged through the host where GPUs repeat), and every trainer takes the same
 * optimizer step from the same sums, so the adapters stay one adapter. Trainer 0's adapter is the one published and
 * checkpointed; a restored checkpoint is copied from it into the others.
 */
final class TrainerReplicas implements AutoCloseable {

    /**
     * One trainer: its device (for messages), backend and model, its adapter and policy trainer, the allocator of the
     * adapter's tensors, and what it owns beyond them (its copy of the base and its backend; null for trainer 0, whose
     * model is the runner's).
     */
    record Trainer(String device, Backend backend, Trainable model, Adapter adapter, PolicyTrainer trainer,
                   TensorAllocator memory, AutoCloseable owned) {

        /** Waits for the trainer's device work (nothing on the CPU, whose operations return done). */
        void fence() {
            if (backend instanceof CudaBackend gpu) {
                gpu.synchronize();
            }
        }
    }

    private final List<Trainer> trainers;
    private final List<Communicator> comms;        // the data-parallel group, one a trainer (empty with one trainer)
    private final LocalGroup localGroup;           // the host ranks under the comms where they are not NCCL's
    private final RankThreads threads;             // one a trainer when there are several (null with one)
    private final double[] losses;                 // each trainer's share's loss sum, this round
    private final Object posted = new Object();    // guards losses, arrived, rounds, batchLoss, aborted
    private int arrived;
    private long rounds;
    private double batchLoss;
    private boolean aborted;                       // for good: the group's communicators are gone too
    private final String jobName;

    /**
     * @param comms      one a trainer, rank j for trainer j; empty with one trainer
     * @param localGroup the host group under {@code comms} (aborted on a failure), or null for NCCL's
     */
    TrainerReplicas(List<Trainer> trainers, List<Communicator> comms, LocalGroup localGroup, String jobName) {
        int m = trainers.size();
        if (m == 0 || (m > 1 && comms.size() != m)) {
            throw new IllegalArgumentException("job " + jobName + ": " + m + " trainers and " + comms.size() + " communicators");
        }
        this.trainers = List.copyOf(trainers);
        this.comms = List.copyOf(comms);
        this.localGroup = localGroup;
        this.jobName = jobName;
        this.losses = new double[m];
        this.threads = m > 1 ? new RankThreads("orbit-trainer-" + jobName, m, this::abort) : null;
        if (m > 1) {
            for (int j = 0; j < m; j++) {
                int rank = j;
                Trainer t = trainers.get(j);
                t.trainer().completeGradientsWith(loss -> {
                    AdapterParallel.allReduceGradients(t.adapter(), comms.get(rank));
                    return batchLoss(rank, loss);
                });
            }
        }
    }

    int size() {
        return trainers.size();
    }

    List<Trainer> trainers() {
        return trainers;
    }

    /**
     * The shares' loss sums added in trainer order, once every trainer has posted its own. After {@link #abort} every
     * wait ends and every later call fails at once: a trainer that queued its collectives (NCCL returns before they run)
     * and arrives after a failure never waits for the trainer that failed.
     */
    private double batchLoss(int rank, double loss) {
        synchronized (posted) {
            if (aborted) {
                throw new IllegalStateException("another trainer failed before posting its loss");
            }
            losses[rank] = loss;
            long round = rounds;
            if (++arrived == losses.length) {
                double sum = 0;
                for (double l : losses) {
                    sum += l;
                }
                batchLoss = sum;
                arrived = 0;
                rounds++;
                posted.notifyAll();
            }
            while (rounds == round && !aborted) {
                try {
                    posted.wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IllegalStateException("interrupted waiting for the other trainers' losses", e);
                }
            }
            if (rounds == round) {
                throw new IllegalStateException("another trainer failed before posting its loss");
            }
            return batchLoss;   // a later round cannot start before every trainer has returned from this one
        }
    }

    /**
     * The samples of {@code batch} trainer {@code j} of {@code m} trains: the groups {@code [j·P/m, (j+1)·P/m)} of its
     * P groups (consecutive samples of one group id), so the shares' group counts differ by at most one.
     */
    static List<SampleRecord> share(List<SampleRecord> batch, int m, int j) {
        List<Integer> starts = new ArrayList<>();   // the first sample of each group
        for (int i = 0; i < batch.size(); i++) {
            if (i == 0 || batch.get(i).groupId() != batch.get(i - 1).groupId()) {
                starts.add(i);
            }
        }
        int[] b = RolloutReplicas.shareBounds(starts.size(), m, j);
        int from = b[0] == starts.size() ? batch.size() : starts.get(b[0]);
        int to = b[1] == starts.size() ? batch.size() : starts.get(b[1]);
        return batch.subList(from, to);
    }

    /**
     * One optimizer step on {@code batch} (whole groups): every trainer its share at once, the gradients summed over
     * them. The outcome is the batch's: losses, tokens and clipped tokens summed over the shares, the gap's mean over
     * all tokens and its largest, trainer 0's gradient norm and learning rate (every trainer's, from the same sums).
     */
    PolicyTrainer.Outcome train(List<SampleRecord> batch, int groupSize) {
        int m = trainers.size();
        if (m == 1) {
            return trainers.get(0).trainer().train(batch, groupSize);
        }
        Normaliser norm = trainers.get(0).trainer().normaliser(batch);
        try {
            return combined(threads.all(j -> trainers.get(j).trainer().train(share(batch, m, j), groupSize, norm)));
        } catch (RankThreads.RankFailure f) {
            throw new IllegalStateException("job " + jobName + ": trainer " + f.rank() + " of " + m + " ("
                    + trainers.get(f.rank()).device() + ") failed: " + f.getMessage(), f.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("job " + jobName + ": interrupted waiting for its trainers", e);
        }
    }

    private static PolicyTrainer.Outcome combined(List<PolicyTrainer.Outcome> outs) {
        double loss = 0, gapSum = 0, gapMax = 0, kl = 0, clipped = 0;
        long gapExact = 0, tokens = 0;
        for (PolicyTrainer.Outcome o : outs) {
            loss += o.loss();
            gapSum += o.gapMean() * o.tokens();
            gapMax = Math.max(gapMax, o.gapMax());
            gapExact += o.gapExact();
            tokens += o.tokens();
            kl += o.klMean();
            clipped += o.clipFraction() * o.tokens();
        }
        PolicyTrainer.Outcome first = outs.get(0);
        return new PolicyTrainer.Outcome(loss, tokens == 0 ? 0 : gapSum / tokens, gapMax, gapExact, tokens, first.gradNorm(),
                first.lr(), kl, tokens == 0 ? 0 : clipped / tokens, first.skipped(), first.skipReason());
    }

    /** Trainer 0's adapter values and optimizer state copied into every other trainer (after a checkpoint is restored). */
    void copyFromFirst() {
        Trainer src = trainers.get(0);
        src.fence();
        var state = src.trainer().optimizer().exportState();
        for (int j = 1; j < trainers.size(); j++) {
            Trainer t = trainers.get(j);
            List<? extends Adapter.Param> from = src.adapter().params();
            List<? extends Adapter.Param> to = t.adapter().params();
            for (int i = 0; i < to.size(); i++) {
                t.memory().copy(from.get(i).value(), to.get(i).value());
            }
            t.trainer().optimizer().importState(state);
            t.fence();
        }
    }

    /** Waits for every trainer's device work. */
    void fence() {
        trainers.forEach(t -> t.fence());
    }

    /** Ends the group after a trainer's failure: its communicators first, then every wait for a loss, for good. */
    private void abort() {
        if (localGroup != null) {
            localGroup.abort();
        }
        for (Communicator c : comms) {
            if (c instanceof NcclCommunicator nc) {
                nc.abort();
            }
        }
        synchronized (posted) {
            aborted = true;
            posted.notifyAll();
        }
    }

    /** The communicators, the other trainers' copies of the base and their backends, the threads. */
    @Override
    public void close() {
        if (threads != null) {
            threads.close();   // no trainer runs while its communicator and backend go
        }
        List<AutoCloseable> owned = new ArrayList<>(comms);
        trainers.forEach(t -> owned.add(t.owned()));
        Closing.orThrow(owned.toArray(AutoCloseable[]::new));
    }
}
