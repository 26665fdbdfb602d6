package org.orbitrl.scheduler.rollout;

import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.adapter.AdapterSlots;
import org.orbitrl.model.arch.CausalLM;
import org.orbitrl.model.kv.BlockPool;
import org.orbitrl.model.kv.PagedSequence;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.concurrent.locks.Lock;
import java.util.Deque;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.ConcurrentLinkedQueue;

/**
 * Batched generation over a paged KV cache with continuous batching: every {@link #step} runs
 * one forward over the new tokens of all running sequences — whole prompts for sequences joining,
 * one token for those decoding — then samples one token for each. Sequences join and leave
 * between steps. The G samples of a request share the prompt's blocks (copy on write). When the
 * cache cannot hold the next step, the youngest sequences are preempted (blocks freed) and later
 * recomputed from their tokens; the batch never fails.
 *
 * <p>Adapter versions switch only in {@link #step}'s first line, so no step mixes versions; every
 * token records the version that produced it. One thread drives an engine; {@link #submit} may
 * be called from any thread.
 */
public final class RolloutEngine implements AutoCloseable {

    /**
     * @param blockSize      tokens per cache block
     * @param blocks         blocks in the pool
     * @param maxRunning     sequences decoding at once
     * @param maxBatchTokens new tokens per forward (prefills are admitted while they fit)
     */
    public record Options(int blockSize, int blocks, int maxRunning, int maxBatchTokens) {
        public Options {
            if (blockSize <= 0 || blocks <= 0 || maxRunning <= 0 || maxBatchTokens <= 0) {
                throw new IllegalArgumentException("engine options must be positive: " + blockSize + ", " + blocks + ", "
                        + maxRunning + ", " + maxBatchTokens);
            }
        }
    }

    /** Counters since the engine started. */
    public record Stats(long steps, long generatedTokens, long prefillTokens, long preemptions, long aborted) {
    }

    private final CausalLM model;
    private final AdapterSlots slots;
    private final Options options;
    private final TextDecoder decoder;
    private final BlockPool pool;
    private final ConcurrentLinkedQueue<Request> submitted = new ConcurrentLinkedQueue<>();
    private final Deque<Seq> waiting = new ArrayDeque<>();       // preempted sequences, resumed first
    private final Deque<Request> newRequests = new ArrayDeque<>();
    private final List<Seq> running = new ArrayList<>();
    private long admissions;
    private long steps;
    private long generated;
    private long prefilled;
    private long preemptions;
    private long aborted;

    /** One sample being generated. */
    private static final class Seq {
        final Request request;
        final int sample;
        final SplittableRandom rng;
        final List<Integer> tokens = new ArrayList<>();
        final List<Float> policy = new ArrayList<>();
        final List<Float> sampled = new ArrayList<>();
        final List<Long> versions = new ArrayList<>();
        PagedSequence cache;
        long admittedAt;
        int preempted;
        int[] pendingInput;        // tokens the next forward feeds for this sequence
        String stopString;

        Seq(Request request, int sample) {
            this.request = request;
            this.sample = sample;
            this.rng = new SplittableRandom(request.params().seed() * 0x9E3779B97F4A7C15L + sample);
        }
    }

    private volatile Lock deviceLock;

    public RolloutEngine(CausalLM model, AdapterSlots slots, Options options, TextDecoder decoder) {
        this.model = model;
        this.slots = slots;
        this.options = options;
        this.decoder = decoder;
        CausalLM.CacheGeometry g = model.cacheGeometry();
        this.pool = new BlockPool(model.backend().allocator(), g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(),
                options.blockSize(), options.blocks());
    }

    /**
     * Makes {@link #generate} hold {@code lock} for each engine step, so that another thread may
     * use the same device backend between steps (a backend is driven by one thread at a time);
     * null (the default) for no lock.
     */
    public void serializeDeviceWork(Lock lock) {
        this.deviceLock = lock;
    }

    /** Queues a request; it joins the batch at a coming step. Thread-safe. */
    public void submit(Request r) {
        submitted.add(r);
    }

    /** True when nothing is queued or running. */
    public boolean idle() {
        return submitted.isEmpty() && newRequests.isEmpty() && waiting.isEmpty() && running.isEmpty();
    }

    public Stats stats() {
        return new Stats(steps, generated, prefilled, preemptions, aborted);
    }

    /** Bytes of KV cache per token, as this engine's pool stores it. */
    public long kvBytesPerToken() {
        return pool.bytesPerToken();
    }

    /** Submits the requests, steps until all are done, and returns their samples in request order. */
    public List<Completion> generate(List<Request> requests) {
        Map<String, Completion[]> byRequest = new LinkedHashMap<>();
        for (Request r : requests) {
            if (byRequest.put(r.id(), new Completion[r.samples()]) != null) {
                throw new IllegalArgumentException("two requests share the id " + r.id());
            }
        }
        requests.forEach(this::submit);
        while (!idle()) {
            Lock lock = deviceLock;
            List<Completion> done;
            if (lock == null) {
                done = step();
            } else {
                lock.lock();
                try {
                    done = step();
                } finally {
                    lock.unlock();
                }
            }
            for (Completion c : done) {
                Completion[] slot = byRequest.get(c.requestId());
                if (slot != null) {
                    slot[c.sample()] = c;
                }
            }
        }
        List<Completion> out = new ArrayList<>();
        byRequest.values().forEach(cs -> out.addAll(List.of(cs)));
        return out;
    }

    /** One engine step; returns the samples that finished in it. */
    public List<Completion> step() {
        long version = slots == null ? 0 : slots.beginStep();   // the only place a new adapter version takes effect
        for (Request r; (r = submitted.poll()) != null; ) {
            newRequests.add(r);
        }
        List<Completion> finished = new ArrayList<>();
        makeRoomForDecodes();
        List<Seq> joining = admit(finished);
        List<Seq> batch = new ArrayList<>(running);
        if (batch.isEmpty()) {
            return finished;
        }
        steps++;
        List<CausalLM.Segment> segments = new ArrayList<>();
        for (Seq s : batch) {
            segments.add(new CausalLM.Segment(s.pendingInput, s.cache));
            if (s.pendingInput.length > 1 || joining.contains(s)) {
                prefilled += s.pendingInput.length;
            }
        }
        Tensor logits = model.forward(segments);                   // [new tokens, vocab]
        int v = model.vocabSize();
        int[] lastRows = new int[batch.size()];                     // each sequence's last new token
        int row = 0;
        for (int i = 0; i < batch.size(); i++) {
            row += batch.get(i).pendingInput.length;
            lastRows[i] = row - 1;
        }
        float[] all = lastLogits(logits, lastRows);                 // [batch, vocab]: the one sync per step
        List<Seq> forks = new ArrayList<>();
        for (int i = 0; i < batch.size(); i++) {
            Seq s = batch.get(i);
            float[] last = java.util.Arrays.copyOfRange(all, i * v, (i + 1) * v);
            if (s.sample == 0 && s.request.samples() > 1 && s.tokens.isEmpty() && s.preempted == 0) {
                for (int k = 1; k < s.request.samples(); k++) {      // prefix sharing: siblings fork the prompt
                    Seq sib = new Seq(s.request, k);
                    sib.cache = s.cache.fork();
                    sib.admittedAt = s.admittedAt;
                    accept(sib, last, version, finished);
                    forks.add(sib);
                }
            }
            accept(s, last, version, finished);
        }
        for (Seq f : forks) {
            if (f.cache != null) {
                running.add(f);
            }
        }
        running.removeIf(s -> s.cache == null);
        return finished;
    }

    /**
     * The logits rows {@code rows} of {@code logits} [tokens, vocab] on the host, [rows, vocab]: read
     * directly from host memory, or gathered on the device and copied (only the rows sampled from).
     */
    private float[] lastLogits(Tensor logits, int[] rows) {
        org.orbitrl.kernels.Backend b = model.backend();
        org.orbitrl.kernels.TensorAllocator a = b.allocator();
        int v = logits.size(1);
        if (a.hostMemory()) {
            float[] all = logits.toFloatArray();
            float[] out = new float[rows.length * v];
            for (int i = 0; i < rows.length; i++) {
                System.arraycopy(all, rows[i] * v, out, i * v, v);
            }
            return out;
        }
        Tensor picked = a.allocate(org.orbitrl.kernels.MemoryCategory.LOGITS, org.orbitrl.kernels.DType.F32, rows.length, v);
        b.gatherRows(logits, a.upload(org.orbitrl.kernels.MemoryCategory.ACTIVATIONS, Tensor.ofInts(rows, rows.length)), picked);
        return a.toHost(picked).toFloatArray();
    }

    /** Samples the next token of {@code s} from its logits row and applies the stop rules. */
    private void accept(Seq s, float[] logits, long version, List<Completion> finished) {
        SamplingParams p = s.request.params();
        Sampler.Draw d = Sampler.sample(logits, p, s.rng);
        s.tokens.add(d.token());
        s.policy.add(d.policyLogprob());
        s.sampled.add(d.sampledLogprob());
        s.versions.add(version);
        generated++;
        s.pendingInput = new int[]{d.token()};
        FinishReason reason = null;
        if (p.stopTokenIds().contains(d.token())) {
            reason = FinishReason.STOP;
        } else if (!p.stopStrings().isEmpty() && decoder != null) {
            String text = decoder.decode(s.tokens.stream().mapToInt(Integer::intValue).toArray());
            for (String stop : p.stopStrings()) {
                if (text.contains(stop)) {
                    reason = FinishReason.STOP;
                    s.stopString = stop;
                    break;
                }
            }
        }
        if (reason == null && s.tokens.size() >= p.maxNewTokens()) {
            reason = FinishReason.LENGTH;
        }
        if (reason != null) {
            finished.add(finish(s, reason));
        }
    }

    private Completion finish(Seq s, FinishReason reason) {
        if (s.cache != null) {
            s.cache.close();
            s.cache = null;
        }
        int n = s.tokens.size();
        float[] pl = new float[n];
        float[] sl = new float[n];
        long[] vs = new long[n];
        for (int i = 0; i < n; i++) {
            pl[i] = s.policy.get(i);
            sl[i] = s.sampled.get(i);
            vs[i] = s.versions.get(i);
        }
        return new Completion(s.request.id(), s.sample, s.request.prompt(), s.tokens.stream().mapToInt(Integer::intValue).toArray(),
                pl, sl, vs, reason, s.stopString, s.preempted);
    }

    /** Preempts the youngest running sequences until every running one can take its next token. */
    private void makeRoomForDecodes() {
        while (true) {
            int need = 0;
            for (Seq s : running) {
                need += s.cache.blocksNeeded(1);
            }
            if (need <= pool.freeBlocks() || running.isEmpty()) {
                return;
            }
            Seq youngest = running.stream().max(Comparator.comparingLong((Seq s) -> s.admittedAt).thenComparingInt(s -> s.sample))
                    .orElseThrow();
            running.remove(youngest);
            youngest.cache.close();
            youngest.cache = null;
            youngest.preempted++;
            preemptions++;
            int[] recompute = new int[youngest.request.prompt().length + youngest.tokens.size()];
            System.arraycopy(youngest.request.prompt(), 0, recompute, 0, youngest.request.prompt().length);
            for (int i = 0; i < youngest.tokens.size(); i++) {
                recompute[youngest.request.prompt().length + i] = youngest.tokens.get(i);
            }
            // recompute feeds prompt + every generated token: its last row's logits are exactly what the
            // decode step of the last token would have given (bit for bit in exact mode)
            youngest.pendingInput = recompute;
            waiting.addFirst(youngest);
        }
    }

    /** Admits preempted sequences, then new requests, while blocks, batch slots and tokens allow. */
    private List<Seq> admit(List<Completion> finished) {
        List<Seq> joined = new ArrayList<>();
        int tokens = running.size();
        int reserved = 0;
        for (Seq s : running) {
            reserved += s.cache.blocksNeeded(1);
        }
        while (!waiting.isEmpty()) {
            Seq s = waiting.peekFirst();
            int n = s.pendingInput.length;
            int blocks = (n + options.blockSize() - 1) / options.blockSize();
            if (blocks + 1 > pool.capacityBlocks()) {      // can never fit again: end it rather than wait forever
                waiting.pollFirst();
                aborted++;
                finished.add(finish(s, FinishReason.ABORTED));
                continue;
            }
            if (running.size() >= options.maxRunning() || tokens + n > options.maxBatchTokens() && !running.isEmpty()
                    || blocks + reserved > pool.freeBlocks()) {
                break;
            }
            waiting.pollFirst();
            s.cache = new PagedSequence(pool);
            s.admittedAt = ++admissions;
            reserved += blocks;
            tokens += n;
            running.add(s);
            joined.add(s);
        }
        while (!newRequests.isEmpty()) {
            Request r = newRequests.peekFirst();
            int n = r.prompt().length;
            int blocks = (n + options.blockSize() - 1) / options.blockSize() + r.samples();
            if (blocks > pool.capacityBlocks()) {
                newRequests.pollFirst();
                aborted += r.samples();
                for (int k = 0; k < r.samples(); k++) {
                    Seq s = new Seq(r, k);
                    finished.add(finish(s, FinishReason.ABORTED));
                }
                continue;
            }
            if (running.size() + r.samples() > options.maxRunning() || tokens + n > options.maxBatchTokens() && !running.isEmpty()
                    || blocks + reserved > pool.freeBlocks()) {
                break;
            }
            newRequests.pollFirst();
            Seq s = new Seq(r, 0);
            s.cache = new PagedSequence(pool);
            s.pendingInput = r.prompt();
            s.admittedAt = ++admissions;
            reserved += blocks;
            tokens += n;
            running.add(s);
            joined.add(s);
        }
        return joined;
    }

    /** Aborts every sample of a request, wherever it is. */
    public List<Completion> abort(String requestId) {
        List<Completion> out = new ArrayList<>();
        for (Seq s : new ArrayList<>(running)) {
            if (s.request.id().equals(requestId)) {
                running.remove(s);
                aborted++;
                out.add(finish(s, FinishReason.ABORTED));
            }
        }
        waiting.removeIf(s -> {
            if (s.request.id().equals(requestId)) {
                aborted++;
                out.add(finish(s, FinishReason.ABORTED));
                return true;
            }
            return false;
        });
        newRequests.removeIf(r -> r.id().equals(requestId));
        submitted.removeIf(r -> r.id().equals(requestId));
        return out;
    }

    @Override
    public void close() {
        running.forEach(s -> {
            if (s.cache != null) {
                s.cache.close();
            }
        });
        running.clear();
    }
}
