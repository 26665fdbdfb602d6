package org.orbitrl.scheduler.loop;

import org.orbitrl.scheduler.job.JobSpec;
import org.orbitrl.scheduler.job.Tunables;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.log.SampleTimings;
import org.orbitrl.scheduler.rollout.Completion;
import org.orbitrl.scheduler.rollout.Request;
import org.orbitrl.scheduler.rollout.SamplingParams;
import org.orbitrl.scheduler.task.Problem;
import org.orbitrl.scheduler.task.Reward;
import org.orbitrl.scheduler.task.Task;

import java.util.ArrayList;
import java.util.List;
import java.util.function.LongSupplier;
import java.util.function.Supplier;

/**
 * How the RL loop turns a step's prompts into rollout requests and completions into logged
 * sample records, the same in sync and async mode: seeds by job seed, step and prompt index;
 * group ids unique in the job's log; every token's adapter version recorded as spans.
 */
final class SampleFactory {
    private final JobSpec spec;
    private final Task task;
    private final TextCodec codec;
    private final Supplier<Tunables> tunables;
    private final LongSupplier servingVersion;

    /**
     * @param tunables       the current tunables (temperature), read at each call
     * @param servingVersion the adapter version recorded for a completion that carries none
     */
    SampleFactory(JobSpec spec, Task task, TextCodec codec, Supplier<Tunables> tunables, LongSupplier servingVersion) {
        this.spec = spec;
        this.task = task;
        this.codec = codec;
        this.tunables = tunables;
        this.servingVersion = servingVersion;
    }

    /** How the async rollout thread makes its groups (the same prompts, requests and records as sync). */
    AsyncRollout.Producer producer() {
        return new AsyncRollout.Producer() {
            @Override
            public List<Problem> problems(long rolloutStep) {
                return task.trainBatch(spec.seed(), rolloutStep, spec.batch().promptsPerStep());
            }

            @Override
            public List<Request> requests(List<Problem> problems, long rolloutStep) {
                return SampleFactory.this.requests(problems, rolloutStep);
            }

            @Override
            public List<SampleRecord> group(long rolloutStep, int index, Problem p, List<Completion> samples) {
                List<SampleRecord> g = new ArrayList<>();
                for (int s = 0; s < samples.size(); s++) {
                    Completion c = samples.get(s);
                    g.add(record(rolloutStep, index, s, p, c, task.verify(p, codec.decode(c.tokens())), System.nanoTime()));
                }
                return g;
            }
        };
    }

    /** The group id of prompt {@code i} of step {@code step}: unique in the job's log. */
    static long groupId(long step, int i) {
        return step * 1_000_000L + i;
    }

    /** The rollout requests of a step's prompts: {@code batch.samples_per_prompt} samples each, seeded by step and index. */
    List<Request> requests(List<Problem> problems, long step) {
        List<Request> out = new ArrayList<>();
        var b = spec.batch();
        var s = spec.sampling();
        for (int i = 0; i < problems.size(); i++) {
            Problem p = problems.get(i);
            int[] prompt = codec.encode(p.prompt());
            if (prompt.length > b.maxPromptTokens()) {
                throw new IllegalArgumentException("task prompt " + p.id() + " has " + prompt.length
                        + " tokens, more than batch.max_prompt_tokens " + b.maxPromptTokens());
            }
            long seed = spec.seed() * 1_000_003L + step * 8191L + i;
            out.add(new Request(p.id() + "@" + step + "#" + i, prompt, new SamplingParams((float) tunables.get().temperature(),
                    (float) s.topP(), s.topK(), (float) s.minP(), b.maxResponseTokens(), codec.stopTokens(),
                    task.stopStrings(), seed), b.samplesPerPrompt()));
        }
        return out;
    }

    /** The logged record of sample {@code s} of prompt {@code i} of step {@code step}, started at {@code t0} (nanoTime). */
    SampleRecord record(long step, int i, int s, Problem p, Completion c, Reward r, long t0) {
        boolean[] mask = new boolean[c.tokens().length];
        java.util.Arrays.fill(mask, true);
        List<org.orbitrl.scheduler.log.VersionSpan> spans = new ArrayList<>();
        for (int t = 0; t < c.versions().length; t++) {
            if (t == 0 || c.versions()[t] != c.versions()[t - 1]) {
                spans.add(new org.orbitrl.scheduler.log.VersionSpan(t, c.versions()[t]));
            }
        }
        if (spans.isEmpty()) {
            spans.add(new org.orbitrl.scheduler.log.VersionSpan(0, servingVersion.getAsLong()));
        }
        long now = System.currentTimeMillis() * 1_000_000L;
        return SampleRecord.builder().job(spec.name()).promptId(p.id())
                .group(groupId(step, i), s, spec.batch().samplesPerPrompt())
                .promptTokens(c.prompt()).response(c.tokens(), c.policyLogprobs(), mask).versions(spans)
                .reward(r.total(), r.breakdown()).finishReason(org.orbitrl.scheduler.log.FinishReason.valueOf(c.reason().name()))
                .temperature((float) tunables.get().temperature())
                .timings(new SampleTimings(now - (System.nanoTime() - t0), now, 0)).build();
    }
}
