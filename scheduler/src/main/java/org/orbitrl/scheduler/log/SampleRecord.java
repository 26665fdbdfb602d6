package org.orbitrl.scheduler.log;

import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.SortedMap;
import java.util.TreeMap;

/**
 * One rollout sample as logged: everything needed to recompute its loss offline. Immutable
 * (arrays are copied in and out) and versioned: {@code schemaVersion} is the log format it was
 * read from (records made in memory carry {@link #CURRENT_SCHEMA}).
 *
 * @param schemaVersion   the sample-log schema version, 1..{@link #CURRENT_SCHEMA}
 * @param job             the job's name
 * @param promptId        the prompt's id within the task (stable across runs with the same seed)
 * @param groupId         the group's id; samples of one prompt in one step share it
 * @param sampleIndex     index of this sample within its group, 0..groupSize-1
 * @param groupSize       samples in the group
 * @param promptTokens    prompt token ids              // [promptLen]
 * @param responseTokens  generated token ids           // [responseLen]
 * @param rolloutLogprobs log-prob of each generated token under the distribution it was sampled
 *                        from                          // [responseLen]
 * @param lossMask        whether each response token counts in the loss // [responseLen]
 * @param versions        adapter version of each response token, as spans (one span per version,
 *                        first at token 0, versions increasing)
 * @param reward          the total reward
 * @param rewardBreakdown reward components by name (correctness, format, ...), sorted by name
 * @param finishReason    why generation ended
 * @param temperature     the sampling temperature the tokens were drawn at
 * @param timings         generation and reward times
 */
public record SampleRecord(int schemaVersion, String job, String promptId, long groupId, int sampleIndex, int groupSize,
                           int[] promptTokens, int[] responseTokens, float[] rolloutLogprobs, boolean[] lossMask,
                           List<VersionSpan> versions, double reward, SortedMap<String, Double> rewardBreakdown,
                           FinishReason finishReason, float temperature, SampleTimings timings) {
    /** The schema version this code writes. */
    public static final int CURRENT_SCHEMA = 1;

    public SampleRecord {
        Objects.requireNonNull(job, "job");
        Objects.requireNonNull(promptId, "promptId");
        Objects.requireNonNull(finishReason, "finishReason");
        Objects.requireNonNull(timings, "timings");
        promptTokens = promptTokens.clone();
        responseTokens = responseTokens.clone();
        rolloutLogprobs = rolloutLogprobs.clone();
        lossMask = lossMask.clone();
        versions = List.copyOf(versions);
        rewardBreakdown = Collections.unmodifiableSortedMap(new TreeMap<>(rewardBreakdown));
        int n = responseTokens.length;
        check(schemaVersion >= 1 && schemaVersion <= CURRENT_SCHEMA, "schema version " + schemaVersion
                + " is not one this code knows (1.." + CURRENT_SCHEMA + ")");
        check(groupSize >= 1 && sampleIndex >= 0 && sampleIndex < groupSize, "sample index " + sampleIndex
                + " outside a group of " + groupSize);
        check(rolloutLogprobs.length == n && lossMask.length == n, "per-token arrays disagree: " + n
                + " response tokens, " + rolloutLogprobs.length + " log-probs, " + lossMask.length + " mask entries");
        check(n == 0 ? versions.isEmpty() : !versions.isEmpty() && versions.getFirst().start() == 0,
                "version spans must start at token 0 and cover every response token (" + n + " tokens, spans "
                        + versions + ")");
        for (int i = 1; i < versions.size(); i++) {
            VersionSpan a = versions.get(i - 1);
            VersionSpan b = versions.get(i);
            check(b.start() > a.start() && b.start() < n && b.version() > a.version(),
                    "version spans must have increasing starts inside the response and increasing versions: " + versions);
        }
        for (float lp : rolloutLogprobs) {
            check(!(lp > 0) && !Float.isNaN(lp), "a log-prob must be <= 0 and not NaN, got " + lp);
        }
        check(Double.isFinite(reward), "reward must be finite, got " + reward);
        for (Map.Entry<String, Double> e : rewardBreakdown.entrySet()) {
            check(Double.isFinite(e.getValue()), "reward component '" + e.getKey() + "' must be finite, got "
                    + e.getValue());
        }
        check(Float.isFinite(temperature) && temperature >= 0, "temperature must be finite and >= 0, got " + temperature);
    }

    private static void check(boolean ok, String message) {
        if (!ok) {
            throw new IllegalArgumentException(message);
        }
    }

    @Override
    public int[] promptTokens() {
        return promptTokens.clone();
    }

    @Override
    public int[] responseTokens() {
        return responseTokens.clone();
    }

    @Override
    public float[] rolloutLogprobs() {
        return rolloutLogprobs.clone();
    }

    @Override
    public boolean[] lossMask() {
        return lossMask.clone();
    }

    // The arrays themselves, for the codec in this package (never handed out).
    int[] promptArray() {
        return promptTokens;
    }

    int[] responseArray() {
        return responseTokens;
    }

    float[] logprobArray() {
        return rolloutLogprobs;
    }

    /** Number of generated tokens. */
    public int responseLength() {
        return responseTokens.length;
    }

    /** Generated token {@code i}. */
    public int responseToken(int i) {
        return responseTokens[i];
    }

    /** Rollout log-prob of generated token {@code i}. */
    public float rolloutLogprob(int i) {
        return rolloutLogprobs[i];
    }

    /** Whether generated token {@code i} counts in the loss. */
    public boolean inLoss(int i) {
        return lossMask[i];
    }

    /** The adapter version that generated response token {@code i}. */
    public long versionOf(int token) {
        Objects.checkIndex(token, responseTokens.length);
        long v = versions.getFirst().version();
        for (VersionSpan s : versions) {
            if (s.start() > token) {
                break;
            }
            v = s.version();
        }
        return v;
    }

    /** The oldest adapter version among the response tokens (-1 for an empty response). */
    public long oldestVersion() {
        return versions.isEmpty() ? -1 : versions.getFirst().version();
    }

    /** The newest adapter version among the response tokens (-1 for an empty response). */
    public long newestVersion() {
        return versions.isEmpty() ? -1 : versions.getLast().version();
    }

    /** Whether generation crossed a version switch. */
    public boolean mixesVersions() {
        return versions.size() > 1;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof SampleRecord r && schemaVersion == r.schemaVersion && job.equals(r.job)
                && promptId.equals(r.promptId) && groupId == r.groupId && sampleIndex == r.sampleIndex
                && groupSize == r.groupSize && Arrays.equals(promptTokens, r.promptTokens)
                && Arrays.equals(responseTokens, r.responseTokens) && Arrays.equals(rolloutLogprobs, r.rolloutLogprobs)
                && Arrays.equals(lossMask, r.lossMask) && versions.equals(r.versions)
                && Double.compare(reward, r.reward) == 0 && rewardBreakdown.equals(r.rewardBreakdown)
                && finishReason == r.finishReason && Float.compare(temperature, r.temperature) == 0
                && timings.equals(r.timings);
    }

    @Override
    public int hashCode() {
        int h = Objects.hash(schemaVersion, job, promptId, groupId, sampleIndex, groupSize, versions, reward,
                rewardBreakdown, finishReason, temperature, timings);
        h = 31 * h + Arrays.hashCode(promptTokens);
        h = 31 * h + Arrays.hashCode(responseTokens);
        h = 31 * h + Arrays.hashCode(rolloutLogprobs);
        return 31 * h + Arrays.hashCode(lossMask);
    }

    @Override
    public String toString() {
        return "SampleRecord[v" + schemaVersion + " " + job + " prompt " + promptId + " group " + groupId + " sample "
                + sampleIndex + "/" + groupSize + ", " + promptTokens.length + "+" + responseTokens.length
                + " tokens, versions " + versions + ", reward " + reward + " " + rewardBreakdown + ", " + finishReason
                + "]";
    }

    /** A builder for records made in memory (schema {@link #CURRENT_SCHEMA}). */
    public static Builder builder() {
        return new Builder();
    }

    /** Builds a {@link SampleRecord}; every field must be set except reward breakdown and temperature. */
    public static final class Builder {
        private String job;
        private String promptId;
        private long groupId;
        private int sampleIndex;
        private int groupSize = 1;
        private int[] promptTokens = new int[0];
        private int[] responseTokens = new int[0];
        private float[] logprobs = new float[0];
        private boolean[] lossMask = new boolean[0];
        private List<VersionSpan> versions = List.of();
        private double reward;
        private SortedMap<String, Double> breakdown = new TreeMap<>();
        private FinishReason finishReason;
        private float temperature = 1f;
        private SampleTimings timings;

        public Builder job(String v) { job = v; return this; }
        public Builder promptId(String v) { promptId = v; return this; }
        public Builder group(long id, int index, int size) { groupId = id; sampleIndex = index; groupSize = size; return this; }
        public Builder promptTokens(int... v) { promptTokens = v; return this; }
        /** Response tokens, their log-probs and loss mask, all of one length. */
        public Builder response(int[] tokens, float[] rolloutLogprobs, boolean[] mask) {
            responseTokens = tokens;
            logprobs = rolloutLogprobs;
            lossMask = mask;
            return this;
        }
        /** Every response token made by one adapter version. */
        public Builder version(long v) { versions = List.of(new VersionSpan(0, v)); return this; }
        public Builder versions(List<VersionSpan> v) { versions = v; return this; }
        public Builder reward(double total, Map<String, Double> components) { reward = total; breakdown = new TreeMap<>(components); return this; }
        public Builder finishReason(FinishReason v) { finishReason = v; return this; }
        public Builder temperature(float v) { temperature = v; return this; }
        public Builder timings(SampleTimings v) { timings = v; return this; }

        public SampleRecord build() {
            return new SampleRecord(CURRENT_SCHEMA, job, promptId, groupId, sampleIndex, groupSize, promptTokens,
                    responseTokens, logprobs, lossMask, versions, reward, breakdown, finishReason, temperature, timings);
        }
    }
}
