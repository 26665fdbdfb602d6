package org.orbitrl.scheduler.rollout;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.CapturedStep;
import org.orbitrl.kernels.NotCapturableException;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.DecodeStep;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.util.HashMap;
import java.util.Map;

/**
 * The rollout engine's captured decode steps: a pure decode step (every running sequence feeds one
 * token) is padded up to a power-of-two batch and run by replaying a step captured once per batch
 * bucket, block-table width bucket and adapter state (the active slot's adapter and whether
 * adapters are on: slot dispatch happens on the host while capturing, and publication writes the
 * idle slot's tensors in place, so a captured step stays valid). Padding rows write into the pool's
 * scratch block and their logits rows are never sampled. Inputs reach the device with one copy per
 * step ({@link DecodeStep#prepare}).
 *
 * <p>When the model has no decode-step form the cache turns itself off for good, logs why once, and
 * the engine runs every step eagerly. When a step of some batch bucket cannot be captured under some
 * adapter state (a layer that reads the host at that batch, such as an MoE block whose experts run
 * grouped by expert with the counts read on the host) that bucket's steps under that state run eagerly from then on, logged
 * once, and the other buckets and states keep their graphs. A failure of the capture itself turns the cache off. Owns the
 * captured steps and their arenas until {@link #close}.
 */
final class DecodeGraphs implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(DecodeGraphs.class);

    /** What a captured step depends on besides its inputs. */
    private record Key(int batch, int width, Object adapter, boolean enabled) {
    }

    private final CausalLM model;
    private final BlockPool pool;
    private final BlockPool windowPool;   // where the sliding-window layers keep their rows; null: none
    private final Map<Long, DecodeStep> steps = new HashMap<>();       // by batch << 32 | width
    private final Map<Key, CapturedStep> captured = new HashMap<>();
    private String off;                                                 // why graphs are off; null while on
    private final Map<Key, String> eager = new HashMap<>();             // (batch bucket, adapter state) -> why it runs eagerly
    private long replays;

    /**
     * @param pool       a pool with a scratch block ({@link BlockPool#scratchBlock})
     * @param windowPool the window pool of the sliding-window layers, with a scratch block too; null where there is none
     */
    DecodeGraphs(CausalLM model, BlockPool pool, BlockPool windowPool) {
        this.model = model;
        this.pool = pool;
        this.windowPool = windowPool;
    }

    /**
     * Logits [bucket, vocab] of the step (rows past {@code segments.size()} are padding), each
     * cache advanced by its token; null when the step must run eagerly (nothing advanced then).
     *
     * @param adapter the adapter serving the step (its identity keys the captured step); null for none
     * @param enabled whether adapters are applied
     */
    Tensor forward(java.util.List<CausalLM.Segment> segments, Object adapter, boolean enabled) {
        if (off != null) {
            return null;
        }
        int widest = DecodeStep.blocksAfterReserve(segments, pool, windowPool);
        if (widest < 0) {
            return null;                                   // a prefill or mixed step
        }
        int batch = bucket(segments.size());
        Key eagerKey = new Key(batch, 0, adapter, enabled);
        if (eager.containsKey(eagerKey)) {
            return null;
        }
        int width = org.orbitrl.model.kv.PagedDecode.tableWidth(widest);
        DecodeStep step = steps.get((long) batch << 32 | width);
        if (step == null) {
            step = model.decodeStep(pool, windowPool, batch, width);
            if (step == null) {
                turnOff("the model has no decode-step form (" + model.getClass().getSimpleName() + ")");
                return null;
            }
            steps.put((long) batch << 32 | width, step);
        }
        step.prepare(segments);
        Key key = new Key(batch, width, adapter, enabled);
        Backend b = model.backend();
        Tensor logits;
        try {
            CapturedStep c = captured.get(key);
            if (c == null) {
                c = b.captureStep(step::run);
                captured.put(key, c);
            }
            logits = c.replay();
        } catch (NotCapturableException e) {
            eager(eagerKey, e.getMessage());
            return null;                                   // the eager forward reserves the same room again
        } catch (RuntimeException e) {
            if (captured.containsKey(key)) {
                throw e;                                   // a replay failed: not a capture problem
            }
            turnOff("capture failed: " + e);
            return null;
        }
        step.finish(segments);
        replays++;
        return logits;
    }

    /** Turns graphs off for this engine, for {@code reason} (logged once). */
    void turnOff(String reason) {
        if (off == null) {
            off = reason;
            LOG.info("decode steps run eagerly, not as captured graphs: {}", reason);
            close();
        }
    }

    /**
     * Runs the steps of one batch bucket under one adapter state ({@code key}'s width unused) eagerly from now on, for
     * {@code reason} (logged once a bucket and state).
     */
    private void eager(Key key, String reason) {
        if (eager.putIfAbsent(key, reason) == null) {
            LOG.info("decode steps of batch {} run eagerly, not as captured graphs: {}", key.batch(), reason);
        }
    }

    /** Why each batch bucket whose steps run eagerly (under some adapter state) does; the others replay graphs while graphs are on. */
    Map<Integer, String> eagerBatches() {
        Map<Integer, String> m = new java.util.TreeMap<>();
        eager.forEach((k, r) -> m.putIfAbsent(k.batch(), r));
        return java.util.Collections.unmodifiableMap(m);
    }

    /** Why graphs are off; null while they are on. */
    String offReason() {
        return off;
    }

    /** Steps run by a replay so far. */
    long replays() {
        return replays;
    }

    /** Captured steps held. */
    int count() {
        return captured.size();
    }

    /** Device bytes the captured steps' arenas hold (accounted as activations). */
    long arenaBytes() {
        return captured.values().stream().mapToLong(CapturedStep::arenaBytes).sum();
    }

    /** The power of two at or above {@code n} (n ≥ 1). */
    static int bucket(int n) {
        return n <= 1 ? 1 : Integer.highestOneBit(n - 1) << 1;
    }

    @Override
    public void close() {
        captured.values().forEach(CapturedStep::close);
        captured.clear();
        steps.clear();
    }
}
