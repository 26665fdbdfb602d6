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
 *
 * <p>With a budget ({@link RolloutEngine.Options#graphArenaBytes}) the captured steps' arenas hold at most that many
 * bytes: before a capture the least recently replayed steps are closed (their arenas freed) until the arena the new
 * step is expected to take fits beside the rest (as large as the largest arena seen at its batch or above, else the
 * largest below scaled by the batch), and after it until all fit; a closed step is captured again when its key comes
 * back. A step whose arena alone exceeds the budget is kept, alone (logged once): the budget bounds what the graphs
 * hold, never whether a step replays.
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
    private final java.util.LinkedHashMap<Key, CapturedStep> captured = new java.util.LinkedHashMap<>(16, 0.75f, true);   // LRU
    private final long budget;                                          // arena bytes the captured steps may hold; 0: no bound
    private long evictions;
    private boolean overBudgetLogged;
    private String off;                                                 // why graphs are off; null while on
    private final Map<Key, String> eager = new HashMap<>();             // (batch bucket, adapter state) -> why it runs eagerly
    private long replays;

    /**
     * @param pool       a pool with a scratch block ({@link BlockPool#scratchBlock})
     * @param windowPool the window pool of the sliding-window layers, with a scratch block too; null where there is none
     */
    DecodeGraphs(CausalLM model, BlockPool pool, BlockPool windowPool) {
        this(model, pool, windowPool, 0);
    }

    /** @param budget arena bytes the captured steps may hold at once (0: no bound) */
    DecodeGraphs(CausalLM model, BlockPool pool, BlockPool windowPool, long budget) {
        if (budget < 0) {
            throw new IllegalArgumentException("graph arena budget must be 0 (none) or positive, got " + budget);
        }
        this.model = model;
        this.pool = pool;
        this.windowPool = windowPool;
        this.budget = budget;
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
                makeRoom(expectedArena(batch), null);
                c = b.captureStep(step::run, batch);
                captured.put(key, c);
                makeRoom(0, key);
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

    /**
     * Closes the least recently replayed steps other than {@code keep} until {@code incoming} more bytes fit within the
     * budget beside the rest (nothing without a budget).
     */
    private void makeRoom(long incoming, Key keep) {
        if (budget == 0) {
            return;
        }
        var it = captured.entrySet().iterator();
        while (arenaBytes() + incoming > budget && it.hasNext()) {
            var e = it.next();
            if (e.getKey().equals(keep)) {
                continue;
            }
            e.getValue().close();
            it.remove();
            evictions++;
        }
        if (keep != null && arenaBytes() > budget && !overBudgetLogged) {
            overBudgetLogged = true;
            LOG.info("the captured decode step of batch {} holds {} bytes, above the graphs' budget of {}: it is kept alone",
                    keep.batch(), arenaBytes(), budget);
        }
    }

    /**
     * The arena a step of {@code batch} rows is expected to take: the largest held at that batch or above (an arena
     * grows with the rows), else the largest below scaled by the batch; 0 when none is held.
     */
    private long expectedArena(int batch) {
        long above = 0;
        double below = 0;
        for (var e : captured.entrySet()) {
            long bytes = e.getValue().arenaBytes();
            if (e.getKey().batch() >= batch) {
                above = Math.max(above, bytes);
            } else {
                below = Math.max(below, bytes * (double) batch / e.getKey().batch());
            }
        }
        return above > 0 ? above : (long) Math.ceil(below);
    }

    /** Captured steps closed to keep the arenas within the budget, so far. */
    long evictions() {
        return evictions;
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
