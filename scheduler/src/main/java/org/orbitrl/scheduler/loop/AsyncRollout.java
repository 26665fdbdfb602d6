package org.orbitrl.scheduler.loop;

import org.orbitrl.scheduler.log.SampleGroup;
import org.orbitrl.scheduler.log.SampleLogWriter;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.rollout.Completion;
import org.orbitrl.scheduler.rollout.Request;
import org.orbitrl.scheduler.task.Problem;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;

/**
 * Asynchronous rollout: a thread that keeps generating groups with whatever adapter version the
 * engines' active slots serve, and appends them to the sample log, while the trainer trains on
 * earlier ones. New versions arrive through each engine's idle slot and switch between decode
 * steps, so a long sequence may finish under a newer version (its tokens record which). When the
 * trainer falls behind by {@code maxLag} groups the thread waits (backpressure) instead of filling
 * memory or the disk.
 */
final class AsyncRollout implements AutoCloseable {

    /** Produces the step's groups: prompts, requests, records. */
    interface Producer {
        List<Problem> problems(long rolloutStep);

        List<Request> requests(List<Problem> problems, long rolloutStep);

        /** The logged samples of one prompt's completions. */
        List<SampleRecord> group(long rolloutStep, int index, Problem p, List<Completion> samples);
    }

    private final RolloutReplicas engines;
    private final java.util.function.Supplier<SampleLogWriter> writers;
    private final Producer producer;
    private final int samplesPerPrompt;
    private final int maxLag;
    private final boolean abortStale;
    private final Function<Void, Long> consumedGroups;
    private final Thread thread;
    private final AtomicLong produced = new AtomicLong();
    private final AtomicLong tokens = new AtomicLong();
    private final AtomicLong idleNanos = new AtomicLong();
    private final AtomicLong busyNanos = new AtomicLong();
    private final AtomicLong regenerated = new AtomicLong();
    private volatile boolean running = true;
    private volatile boolean paused;
    private volatile boolean parked;
    private volatile Throwable failure;
    private long rolloutStep;

    AsyncRollout(RolloutReplicas engines, java.util.function.Supplier<SampleLogWriter> writers, Producer producer, int samplesPerPrompt,
                 int maxLag, boolean abortStale, long firstStep, long alreadyProduced, Function<Void, Long> consumedGroups) {
        this.engines = engines;
        this.writers = writers;
        this.producer = producer;
        this.samplesPerPrompt = samplesPerPrompt;
        this.maxLag = maxLag;
        this.abortStale = abortStale;
        this.consumedGroups = consumedGroups;
        this.rolloutStep = firstStep;
        this.produced.set(alreadyProduced);
        this.thread = new Thread(this::loop, "orbit-async-rollout");
        this.thread.setDaemon(true);
    }

    void start() {
        thread.start();
    }

    /** Groups appended to the log so far (including before a restart). */
    long producedGroups() {
        return produced.get();
    }

    long generatedTokens() {
        return tokens.get();
    }

    /** Fraction of its time the rollout thread has waited on the trainer (backpressure). */
    double idleFraction() {
        long i = idleNanos.get();
        long b = busyNanos.get();
        return i + b == 0 ? 0 : i / (double) (i + b);
    }

    long regeneratedSamples() {
        return regenerated.get();
    }

    /** True while the thread waits for the trainer. */
    boolean backpressured() {
        return produced.get() - consumedGroups.apply(null) >= maxLag;
    }

    void setPaused(boolean p) {
        paused = p;
    }

    /** Pauses and waits until the thread is between groups, so another caller may use the engine. */
    void quiesce() throws InterruptedException {
        paused = true;
        while (!parked && running && failure == null && thread.isAlive()) {
            Thread.sleep(1);
        }
    }

    /** Rethrows a failure of the rollout thread on the caller's thread. */
    void check() {
        if (failure != null) {
            throw new IllegalStateException("asynchronous rollout failed: " + failure, failure);
        }
    }

    private void loop() {
        try (SampleLogWriter writer = writers.get()) {    // appenders belong to the thread that writes
            while (running) {
                long w0 = System.nanoTime();
                while (running && (paused || produced.get() - consumedGroups.apply(null) >= maxLag)) {
                    engines.beginStep();                // a published version still takes effect while idle
                    parked = true;
                    Thread.sleep(2);
                }
                parked = false;
                idleNanos.addAndGet(System.nanoTime() - w0);
                if (!running) {
                    return;
                }
                long b0 = System.nanoTime();
                rolloutStep++;
                List<Problem> problems = producer.problems(rolloutStep);
                List<Completion> out = engines.generate(producer.requests(problems, rolloutStep));
                for (int i = 0; i < problems.size(); i++) {
                    List<Completion> samples = new ArrayList<>(out.subList(i * samplesPerPrompt, (i + 1) * samplesPerPrompt));
                    if (abortStale && samples.stream().anyMatch(c -> !c.singleVersion())) {
                        // partial_rollouts: abort: regenerate the prompt's samples under one version
                        regenerated.addAndGet(samples.size());
                        samples = engines.generate(producer.requests(List.of(problems.get(i)), rolloutStep));
                    }
                    for (Completion c : samples) {
                        tokens.addAndGet(c.tokens().length);
                    }
                    writer.append(new SampleGroup(producer.group(rolloutStep, i, problems.get(i), samples)));
                    produced.incrementAndGet();
                }
                busyNanos.addAndGet(System.nanoTime() - b0);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (Throwable t) {
            failure = t;
        }
    }

    @Override
    public void close() {
        running = false;
        try {
            thread.join(60_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
