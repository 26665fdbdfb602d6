package org.orbitrl.daemon.testing;

import java.io.IOException;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.scheduler.job.DeviceMemory;
import org.orbitrl.scheduler.job.EvalResult;
import org.orbitrl.scheduler.job.JobContext;
import org.orbitrl.scheduler.job.JobException;
import org.orbitrl.scheduler.job.JobPlan;
import org.orbitrl.scheduler.job.JobRunner;
import org.orbitrl.scheduler.job.PlanRefusedException;
import org.orbitrl.scheduler.job.RunnerState;
import org.orbitrl.scheduler.job.StepMetrics;
import org.orbitrl.scheduler.job.Tunables;
import org.orbitrl.scheduler.job.checkpoint.Checkpoint;
import org.orbitrl.scheduler.job.checkpoint.CheckpointWriter;
import org.orbitrl.scheduler.log.AdapterVersionEvent;
import org.orbitrl.scheduler.log.FinishReason;
import org.orbitrl.scheduler.log.LogEntry;
import org.orbitrl.scheduler.log.SampleGroup;
import org.orbitrl.scheduler.log.SampleLog;
import org.orbitrl.scheduler.log.SampleLogReader;
import org.orbitrl.scheduler.log.SampleLogWriter;
import org.orbitrl.scheduler.log.SampleRecord;
import org.orbitrl.scheduler.log.SampleTimings;

/**
 * A real but minimal runner for the daemon's tests: its rollout side writes deterministic
 * groups to the job's sample log (resuming after the last group in the log), its trainer side
 * consumes them by index and folds each into a {@link LedgerState} that it checkpoints with the
 * consumed index. If the host loses or repeats a sample across crashes, the state shows it.
 *
 * <p>Per step: make sure {@code prompts_per_step} untrained groups are in the log (producing the
 * missing ones), consume exactly that many, publish adapter version step+1 as a log event.
 * Test hooks: {@link #stepDelayMillis} slows steps; a negative {@code seed} -K makes step K fail;
 * {@code memory.reserve} above 1TiB is refused by the plan.
 */
public final class LedgerRunner implements JobRunner {
    /** Sleep per step, so tests can act while a job runs. */
    public static volatile long stepDelayMillis = Long.getLong("orbit.test.ledger.stepMillis", 0);
    /** Tunables each job's runner last received, by job name (tests read it). */
    public static final Map<String, Tunables> APPLIED = new ConcurrentHashMap<>();
    private static final long DEVICE_BYTES = 1L << 40;

    private final JobContext ctx;
    private final int groupsPerStep;
    private final int groupSize;
    private LedgerState state = new LedgerState();
    private SampleLog log;
    private SampleLogWriter writer;
    private SampleLogReader reader;
    private long nextGroupId;
    private volatile boolean paused;

    LedgerRunner(JobContext ctx) {
        this.ctx = ctx;
        this.groupsPerStep = ctx.spec().batch().promptsPerStep();
        this.groupSize = ctx.spec().batch().samplesPerPrompt();
    }

    @Override
    public JobPlan plan() throws JobException {
        long reserve = ctx.spec().memory().reserve().bytes();
        if (reserve > DEVICE_BYTES) {
            throw new PlanRefusedException("memory.reserve " + ctx.spec().memory().reserve() + " exceeds the device's 1TiB");
        }
        Map<String, Map<MemoryCategory, Long>> bytes = new TreeMap<>();
        for (String d : ctx.devices()) {
            bytes.put(d, Map.of(MemoryCategory.ADAPTER_PARAMS, 1L << 20, MemoryCategory.RUNTIME_RESERVE, reserve));
        }
        return new JobPlan(bytes, "");
    }

    @Override
    public void load(Checkpoint resumeFrom) throws JobException {
        try {
            if (resumeFrom != null) {
                state = LedgerState.fromBytes(resumeFrom.bytes("ledger"));
            }
            log = SampleLog.open(ctx.sampleLogDir());
            writer = log.writer();
            reader = log.reader();
            LogEntry.Group last = reader.lastGroup();
            nextGroupId = last == null ? 0 : last.group().groupId() + 1;
            reader.startAfter(state.consumedIndex);
        } catch (IOException e) {
            throw new JobException("cannot load: " + e.getMessage(), e);
        }
    }

    @Override
    public StepMetrics step() throws JobException {
        long t0 = System.nanoTime();
        if (ctx.spec().seed() < 0 && state.step + 1 == -ctx.spec().seed()) {
            throw new JobException("injected failure at step " + (state.step + 1));
        }
        long target = (state.step + 1) * groupsPerStep; // groups the log must hold after this step's rollout
        while (nextGroupId < target) {
            writer.append(group(nextGroupId++));
        }
        int consumed = 0;
        long tokens = 0;
        double reward = 0;
        while (consumed < groupsPerStep) {
            LogEntry e = reader.next();
            if (e == null) {
                throw new JobException("the sample log ended before " + groupsPerStep + " groups were consumed at step "
                        + (state.step + 1) + " (consumed " + consumed + ")");
            }
            if (e instanceof LogEntry.Group g) {
                fold(g.group());
                for (SampleRecord s : g.group().samples()) {
                    tokens += s.responseLength();
                    reward += s.reward();
                }
                consumed++;
            }
            state.consumedIndex = e.index();
        }
        sleep();
        state.step++;
        state.adapterVersion = state.step;
        writer.append(AdapterVersionEvent.of(state.adapterVersion, state.step, "sha256:" + Long.toHexString(state.chain),
                "", 8, System.currentTimeMillis() * 1_000_000L));
        double seconds = (System.nanoTime() - t0) / 1e9;
        double mean = reward / (groupsPerStep * groupSize);
        return StepMetrics.basic(state.step, mean, mean, tokens, seconds, state.adapterVersion, state.samplesTrained,
                Map.of("groups_trained", (double) state.groupsTrained));
    }

    private void fold(SampleGroup g) {
        long id = g.groupId();
        if (state.trained.get((int) id)) {
            state.duplicates++;
        }
        if (id != state.lastGroupId + 1) {
            state.gaps++;
        }
        state.trained.set((int) id);
        state.lastGroupId = id;
        state.chain = LedgerState.mix(state.chain, id, contentHash(g));
        state.groupsTrained++;
        state.samplesTrained += g.size();
    }

    /** A hash of a group's tokens, independent of the adapter version that made them. */
    public static long contentHash(SampleGroup g) {
        long h = 1;
        for (SampleRecord s : g.samples()) {
            for (int t : s.responseTokens()) {
                h = h * 31 + t;
            }
        }
        return h;
    }

    private SampleGroup group(long id) {
        SplittableRandom rnd = new SplittableRandom(ctx.spec().seed() * 1_000_003L + id);
        List<SampleRecord> samples = new ArrayList<>();
        for (int i = 0; i < groupSize; i++) {
            int n = 1 + rnd.nextInt(8);
            float[] lp = new float[n];
            boolean[] mask = new boolean[n];
            for (int t = 0; t < n; t++) {
                lp[t] = (float) -rnd.nextDouble(5);
                mask[t] = true;
            }
            double r = rnd.nextInt(2);
            samples.add(SampleRecord.builder().job(ctx.spec().name()).promptId("ledger/" + id).group(id, i, groupSize)
                    .promptTokens(1, 2, 3).response(rnd.ints(n, 0, 1000).toArray(), lp, mask).version(state.adapterVersion)
                    .reward(r, Map.of("correct", r)).finishReason(FinishReason.STOP)
                    .temperature((float) ctx.spec().sampling().temperature())
                    .timings(new SampleTimings(0, 1, 0)).build());
        }
        return new SampleGroup(samples);
    }

    private void sleep() throws JobException {
        long ms = stepDelayMillis;
        if (ms > 0) {
            try {
                Thread.sleep(ms);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new JobException("interrupted");
            }
        }
    }

    @Override
    public EvalResult evaluate() {
        double acc = Math.min(1.0, 0.1 + 0.01 * state.step);
        TreeMap<Integer, Double> passAtK = new TreeMap<>();
        for (int k : ctx.spec().eval().passAtK()) {
            passAtK.put(k, 1 - Math.pow(1 - acc, k));
        }
        return new EvalResult(state.step, acc, passAtK, ctx.spec().eval().size(), 0.001);
    }

    @Override
    public void checkpoint(CheckpointWriter out) throws IOException {
        out.section("ledger", state.toBytes());
    }

    @Override
    public RunnerState state() {
        return new RunnerState(state.step, state.adapterVersion, state.consumedIndex, state.samplesTrained);
    }

    @Override
    public void pause() {
        paused = true;
    }

    @Override
    public void resume() {
        paused = false;
    }

    @Override
    public void apply(Tunables t) {
        APPLIED.put(ctx.spec().name(), t);
    }

    @Override
    public Map<String, Double> gauges() {
        return Map.of("paused", paused ? 1.0 : 0.0, "queue_lag_groups", (double) Math.max(0,
                nextGroupId - state.groupsTrained));
    }

    @Override
    public List<DeviceMemory> memory() {
        List<DeviceMemory> out = new ArrayList<>();
        for (String d : ctx.devices()) {
            EnumMap<MemoryCategory, Long> live = new EnumMap<>(MemoryCategory.class);
            live.put(MemoryCategory.ADAPTER_PARAMS, 1L << 20);
            out.add(new DeviceMemory(d, live, Map.of(MemoryCategory.ADAPTER_PARAMS, 2L << 20),
                    Map.of(MemoryCategory.ADAPTER_PARAMS, 4L << 20)));
        }
        return out;
    }

    @Override
    public void close() {
        if (reader != null) {
            reader.close();
        }
        if (writer != null) {
            writer.close();
        }
        if (log != null) {
            log.close();
        }
    }
}
