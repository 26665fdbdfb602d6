package org.orbitrl.scheduler.rollout;

import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
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
import java.util.concurrent.ConcurrentLinkedQueue;

/**
 * Batched generation over a paged KV cache with continuous batching: every {@link #step} runs
 * one forward over the new tokens of all running sequences — whole prompts for sequences joining,
 * one token for those decoding — then samples one token for each. Sequences join and leave
 * between steps. The G samples of a request share the prompt's blocks (copy on write). When the
 * cache cannot hold the next step, the youngest sequences are preempted (blocks freed) and later
 * recomputed from their tokens; the batch never fails.
 *
 * <p>A model's sliding-window layers (gpt-oss; Qwen3 with {@code use_sliding_window}) keep their rows in a window
 * pool of their own ({@link Options#windowBlocks}): a sequence holds there only the blocks its next query can see,
 * and gives each one back as it leaves the window, so those layers take a few blocks a sequence instead of its whole
 * length. A prompt goes in in chunks there ({@link #prefillChunk}), each holding its blocks until its forward is
 * done, so that no prompt is longer than the pool can take. Each step is planned ({@link #plan}): the decodes'
 * tokens first, then the prefills' chunks cut to the step's tokens and the blocks left; a decode without its blocks
 * preempts the youngest sequence, a prefill without them waits. Such a model's decode steps run batched over both
 * pools in place ({@code PagedDecode}), and as captured graphs whose inputs carry both pools' tables.
 *
 * <p>Tokens are drawn on the model's backend ({@link org.orbitrl.kernels.Backend#sampleTokens}, {@link TokenDraws}): each draw
 * is keyed by the request's seed, the sample index and the token's position, so a sample's tokens do
 * not depend on the batch, on preemption or on the backend; only the tokens and their log-probs come
 * back to the host each step.
 *
 * <p>A pure decode step (every running sequence feeds one token) runs as a replayed graph where
 * the backend captures one and the model has a decode-step form ({@link Options#graphs}, on by
 * default for device backends; see {@link DecodeGraphs}): the batch padded to a power of two, one
 * host-to-device copy of its inputs, one launch. Prefill and mixed steps, and every step of a
 * model or mode that cannot be captured, run eagerly. The tokens and log-probs are the same either
 * way on the host and, up to 16 sequences, on the GPU (its kernels compute each row alone there);
 * above that the padded batch's cuBLAS products may round differently.
 *
 * <p>Adapter versions switch only in {@link #step}'s first line, so no step mixes versions; every
 * token records the version that produced it. One thread drives an engine; {@link #submit} may
 * be called from any thread.
 */
public final class RolloutEngine implements AutoCloseable {

    /** Whether pure decode steps run as captured graphs ({@link org.orbitrl.kernels.Backend#captureStep}). */
    public enum Graphs {
        /** On for device backends (memory the host cannot read), off on the host. */
        AUTO,
        ON,
        OFF
    }

    /**
     * @param blockSize      tokens per cache block
     * @param blocks         blocks in the pool (of the full-attention layers, where a window pool holds the others)
     * @param maxRunning     sequences decoding at once
     * @param maxBatchTokens new tokens per forward (prefills are admitted while they fit)
     * @param graphs         captured decode steps; results are the same either way
     * @param kvCache        the element type of the paged KV cache: f32, or bf16 (half the memory a token takes)
     * @param windowBlocks   blocks of the window pool, where the model's sliding-window layers keep their rows
     *                       ({@link BlockPool#window}); 0: as many as {@code blocks}
     * @param graphArenaBytes device bytes the captured decode steps' arenas may hold at once, the least recently
     *                       replayed closed first beyond it ({@link DecodeGraphs}); 0: no bound
     */
    public record Options(int blockSize, int blocks, int maxRunning, int maxBatchTokens, Graphs graphs, DType kvCache,
                          int windowBlocks, long graphArenaBytes) {
        public Options {
            if (blockSize <= 0 || blocks <= 0 || maxRunning <= 0 || maxBatchTokens <= 0 || windowBlocks < 0 || graphArenaBytes < 0) {
                throw new IllegalArgumentException("engine options must be positive: " + blockSize + ", " + blocks + ", "
                        + maxRunning + ", " + maxBatchTokens + ", window blocks " + windowBlocks + " (0 or more), graph arena bytes "
                        + graphArenaBytes + " (0 or more)");
            }
            if (graphs == null) {
                throw new IllegalArgumentException("engine option graphs must be AUTO, ON or OFF, got null");
            }
            if (kvCache != DType.F32 && kvCache != DType.BF16) {
                throw new IllegalArgumentException("engine option kvCache must be f32 or bf16, got " + kvCache);
            }
        }

        /** No bound on the captured steps' arenas. */
        public Options(int blockSize, int blocks, int maxRunning, int maxBatchTokens, Graphs graphs, DType kvCache, int windowBlocks) {
            this(blockSize, blocks, maxRunning, maxBatchTokens, graphs, kvCache, windowBlocks, 0);
        }

        /** Window pool blocks as many as {@code blocks}. */
        public Options(int blockSize, int blocks, int maxRunning, int maxBatchTokens, Graphs graphs, DType kvCache) {
            this(blockSize, blocks, maxRunning, maxBatchTokens, graphs, kvCache, 0);
        }

        /** Graphs {@link Graphs#AUTO}, an f32 cache. */
        public Options(int blockSize, int blocks, int maxRunning, int maxBatchTokens) {
            this(blockSize, blocks, maxRunning, maxBatchTokens, Graphs.AUTO);
        }

        /** An f32 cache. */
        public Options(int blockSize, int blocks, int maxRunning, int maxBatchTokens, Graphs graphs) {
            this(blockSize, blocks, maxRunning, maxBatchTokens, graphs, DType.F32);
        }

        /** These options with {@code graphs}. */
        public Options withGraphs(Graphs g) {
            return new Options(blockSize, blocks, maxRunning, maxBatchTokens, g, kvCache, windowBlocks, graphArenaBytes);
        }

        /** These options with a cache of {@code dtype}. */
        public Options withKvCache(DType dtype) {
            return new Options(blockSize, blocks, maxRunning, maxBatchTokens, graphs, dtype, windowBlocks, graphArenaBytes);
        }

        /** These options with the captured steps' arenas bounded by {@code bytes} (0: no bound). */
        public Options withGraphArenaBytes(long bytes) {
            return new Options(blockSize, blocks, maxRunning, maxBatchTokens, graphs, kvCache, windowBlocks, bytes);
        }
    }

    /**
     * Counters since the engine started; {@code graphSteps} of the steps ran as a replayed graph,
     * {@code graphs} captured steps are held, their arenas taking {@code graphArenaBytes} of device
     * memory (activations); {@code graphEvictions} captured steps were closed to keep the arenas within the budget
     * ({@link Options#graphArenaBytes}).
     */
    public record Stats(long steps, long generatedTokens, long prefillTokens, long preemptions, long aborted, long graphSteps,
                        int graphs, long graphArenaBytes, long graphEvictions) {
    }

    private final CausalLM model;
    private final AdapterSlots slots;
    private final Options options;
    private final TextDecoder decoder;
    private final BlockPool pool;
    private final BlockPool windowPool;  // the sliding-window layers' rows; null when the pool holds every layer
    private final DecodeGraphs graphs;   // null when off
    private final int prefillChunk;      // most tokens of a sequence one forward feeds (a window pool's); else unbounded
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
        final List<Integer> tokens = new ArrayList<>();
        final List<Float> policy = new ArrayList<>();
        final List<Float> sampled = new ArrayList<>();
        final List<Long> versions = new ArrayList<>();
        PagedSequence cache;
        long admittedAt;
        int preempted;
        int[] pendingInput;        // tokens the next forwards feed for this sequence
        int fed;                   // of them, those fed already (a prefill in chunks: window pool engines)
        String stopString;

        Seq(Request request, int sample) {
            this.request = request;
            this.sample = sample;
        }
    }

    private volatile Lock deviceLock;

    public RolloutEngine(CausalLM model, AdapterSlots slots, Options options, TextDecoder decoder) {
        this.model = model;
        this.slots = slots;
        this.options = options;
        this.decoder = decoder;
        CausalLM.CacheGeometry g = model.cacheGeometry();
        boolean asked = switch (options.graphs()) {
            case ON -> true;
            case OFF -> false;
            case AUTO -> !model.backend().allocator().hostMemory();
        };
        int window = windowPoolWindow(model);
        boolean useGraphs = asked && g.kvHeads() * g.headDim() > 0;   // a model keeping its own decode state has no pool to capture over
        TensorAllocator a = model.backend().allocator();
        if (window > 0) {
            int[] windows = model.attentionWindows();
            boolean[] full = new boolean[g.layers()];
            boolean[] sliding = new boolean[g.layers()];
            for (int l = 0; l < full.length; l++) {
                sliding[l] = windows[l] > 0;
                full[l] = !sliding[l];
            }
            int windowBlocks = options.windowBlocks() > 0 ? options.windowBlocks() : options.blocks();
            this.pool = new BlockPool(a, g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), options.blockSize(),
                    options.blocks(), useGraphs, options.kvCache(), full, 0);
            this.windowPool = new BlockPool(a, g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), options.blockSize(),
                    windowBlocks, useGraphs, options.kvCache(), sliding, window);
        } else {
            this.pool = new BlockPool(a, g.layers(), g.kvHeads(), g.headDim(), g.vHeadDim(), options.blockSize(),
                    options.blocks(), useGraphs, options.kvCache());
            this.windowPool = null;
        }
        this.graphs = useGraphs ? new DecodeGraphs(model, pool, windowPool, options.graphArenaBytes()) : null;
        this.prefillChunk = windowPool == null ? Integer.MAX_VALUE : prefillChunk(windowPool, options.blocks(), options.maxBatchTokens());
    }

    /**
     * The window of the model's sliding-window layers when its cache keeps them in a window pool: every such layer
     * attends over one window and the model caches keys and values per layer; 0 otherwise (one pool for every layer).
     */
    static int windowPoolWindow(CausalLM model) {
        CausalLM.CacheGeometry g = model.cacheGeometry();
        if (g.kvHeads() * g.headDim() == 0 || g.vHeadDim() == 0) {
            return 0;
        }
        int window = 0;
        for (int w : model.attentionWindows()) {
            if (w > 0 && window > 0 && w != window) {
                return 0;                       // windows of several sizes: one pool for all
            }
            window = Math.max(window, w);
        }
        return window;
    }

    /**
     * Makes {@link #generate} hold {@code lock} for each engine step, so that another thread may
     * use the same backend between steps (a backend is driven by one thread at a time); null (the
     * default) for no lock, as when rollout has a backend of its own.
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
        return graphs == null ? new Stats(steps, generated, prefilled, preemptions, aborted, 0, 0, 0, 0)
                : new Stats(steps, generated, prefilled, preemptions, aborted, graphs.replays(), graphs.count(), graphs.arenaBytes(),
                graphs.evictions());
    }

    /** Why decode steps run eagerly although graphs were asked for; null when they run as graphs or were not asked for. */
    public String graphsOffReason() {
        return graphs == null ? null : graphs.offReason();
    }

    /** The batch buckets whose decode steps run eagerly while graphs are on, with why; empty when every bucket replays graphs. */
    public java.util.Map<Integer, String> eagerBatches() {
        return graphs == null ? java.util.Map.of() : graphs.eagerBatches();
    }

    /** Bytes of KV cache one cached position takes over every layer, as this engine's pools store it. */
    public long kvBytesPerToken() {
        return pool.bytesPerToken() + (windowPool == null ? 0 : windowPool.bytesPerToken());
    }

    /** Blocks of the window pool, where the sliding-window layers keep their rows; 0 without one. */
    public int windowPoolBlocks() {
        return windowPool == null ? 0 : windowPool.capacityBlocks();
    }

    /** Free blocks of the main pool and, where there is one, of the window pool; for tests and reports. */
    public int[] freeBlocks() {
        return windowPool == null ? new int[]{pool.freeBlocks()} : new int[]{pool.freeBlocks(), windowPool.freeBlocks()};
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
        if (slots != null) {
            slots.prepareActive(model.backend());
        }
        for (Request r; (r = submitted.poll()) != null; ) {
            newRequests.add(r);
        }
        List<Completion> finished = new ArrayList<>();
        admit(finished, makeRoom());
        List<Seq> batch = new ArrayList<>();
        List<CausalLM.Segment> segments = new ArrayList<>();
        for (Map.Entry<Seq, Integer> e : plan().feeds().entrySet()) {
            Seq s = e.getKey();
            int len = e.getValue();
            batch.add(s);
            segments.add(new CausalLM.Segment(s.fed == 0 && len == s.pendingInput.length ? s.pendingInput
                    : java.util.Arrays.copyOfRange(s.pendingInput, s.fed, s.fed + len), s.cache));
            if (s.pendingInput.length > 1 || s.tokens.isEmpty()) {   // a prompt, or a preempted sequence's recompute
                prefilled += len;
            }
        }
        if (batch.isEmpty()) {
            return finished;
        }
        steps++;
        Tensor logits = decodeByGraph(segments);                   // [bucket, vocab] or null: the graph's own output
        boolean eager = logits == null;
        if (eager) {
            logits = model.forwardLast(segments);                  // [sequences, vocab]: each one's last new token
        }
        // one draw per running sequence from its last new token's row (row i for sequence i, in the graph's padded
        // batch too), plus one per sibling forked from a prompt; drawn on the backend, only tokens and log-probs come back
        List<Seq> drawn = new ArrayList<>();
        List<Integer> rows = new ArrayList<>();
        List<Seq> forks = new ArrayList<>();
        int row = 0;
        for (int i = 0; i < batch.size(); i++) {
            Seq s = batch.get(i);
            row++;
            int len = segments.get(i).tokens().length;
            if (s.fed + len < s.pendingInput.length) {   // a prefill chunk: the sequence draws once its input is all fed
                s.fed += len;
                continue;
            }
            s.fed = 0;
            if (s.sample == 0 && s.request.samples() > 1 && s.tokens.isEmpty()) {   // its prompt's first draw
                for (int k = 1; k < s.request.samples(); k++) {      // prefix sharing: siblings fork the prompt
                    Seq sib = new Seq(s.request, k);
                    sib.cache = s.cache.fork();
                    sib.admittedAt = s.admittedAt;
                    forks.add(sib);
                    drawn.add(sib);
                    rows.add(row - 1);
                }
            }
            drawn.add(s);
            rows.add(row - 1);
        }
        List<TokenDraws.Pick> picks = new ArrayList<>();
        for (int i = 0; i < drawn.size(); i++) {
            Seq s = drawn.get(i);
            picks.add(new TokenDraws.Pick(s.request.params(), s.sample, s.tokens.size(), rows.get(i)));
        }
        TokenDraws d = drawn.isEmpty() ? TokenDraws.NONE : TokenDraws.of(model.backend(), logits, picks);
        if (eager) {
            model.backend().allocator().release(logits);
        }
        for (int i = 0; i < drawn.size(); i++) {
            accept(drawn.get(i), d.tokens()[i], d.policy()[i], d.sampled()[i], version, finished);
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
     * The running sequences in the order a step takes them: as they run; with a window pool the decodes first, then the
     * prefills (in admission order), which share what is left of the step's tokens.
     */
    private List<Seq> stepOrder() {
        if (windowPool == null) {
            return running;
        }
        List<Seq> order = new ArrayList<>();
        for (Seq s : running) {
            if (s.pendingInput.length - s.fed == 1) {
                order.add(s);
            }
        }
        for (Seq s : running) {
            if (s.pendingInput.length - s.fed > 1) {
                order.add(s);
            }
        }
        return order;
    }

    /**
     * What a step feeds: the tokens of each sequence it takes, in step order, and the blocks those take from the main
     * pool and the window pool; {@code fits}: every decode's token (every sequence's, without a window pool) has its
     * blocks.
     */
    private record Plan(LinkedHashMap<Seq, Integer> feeds, int tokens, int blocks, int windowBlocks, boolean fits) {
    }

    /**
     * The running sequences' feeds: without a window pool each one's pending input whole (admission bounded the
     * step's tokens). With one, each decode's token, then each prefill's next chunk ({@link #prefillChunk}) in
     * admission order, cut to the step's tokens left (the first sequence's whatever they are) and to the blocks left in
     * both pools; a prefill cut to nothing waits for a later step.
     */
    private Plan plan() {
        LinkedHashMap<Seq, Integer> feeds = new LinkedHashMap<>();
        int budget = options.maxBatchTokens();
        int mainLeft = pool.freeBlocks();
        int windowLeft = windowPool == null ? Integer.MAX_VALUE : windowPool.freeBlocks();
        int tokens = 0;
        int blocks = 0;
        int windowBlocks = 0;
        boolean fits = true;
        for (Seq s : stepOrder()) {
            int len = Math.min(s.pendingInput.length - s.fed, prefillChunk);
            if (windowPool != null && len > 1) {   // a prefill's chunk: what the step's tokens and both pools' blocks allow
                len = Math.min(len, feeds.isEmpty() ? len : Math.max(0, budget));
                len = largestFitting(s.cache, len, mainLeft - blocks, windowLeft - windowBlocks);
                if (len == 0) {
                    continue;
                }
            }
            int b = s.cache.blocksNeeded(len);
            int w = s.cache.windowBlocksNeeded(len);
            fits &= b <= mainLeft - blocks && w <= windowLeft - windowBlocks;
            feeds.put(s, len);
            budget -= len;
            tokens += len;
            blocks += b;
            windowBlocks += w;
        }
        return new Plan(feeds, tokens, blocks, windowBlocks, fits);
    }

    /** The most tokens, at most {@code len}, {@code cache} can reserve with {@code main} and {@code window} blocks left. */
    private static int largestFitting(PagedSequence cache, int len, int main, int window) {
        int lo = 0;
        int hi = len;
        while (lo < hi) {   // blocks needed grow with the tokens
            int mid = (lo + hi + 1) >>> 1;
            if (cache.blocksNeeded(mid) <= main && cache.windowBlocksNeeded(mid) <= window) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        return lo;
    }

    /**
     * The most tokens of one sequence a forward feeds over {@code windowPool}: as many as its blocks hold beside the
     * window before them (a chunk of c tokens after a window of W positions spans at most (W - 1 + c) / blockSize + 2
     * blocks), at most {@code maxBatchTokens}. A longer prompt is fed in chunks, its blocks before each chunk's window
     * given back after each. Unbounded where the window pool has as many blocks as the main one, {@code mainBlocks}.
     */
    static int prefillChunk(BlockPool windowPool, int mainBlocks, int maxBatchTokens) {
        if (windowPool.capacityBlocks() >= mainBlocks) {
            return Integer.MAX_VALUE;   // what the main pool holds the window pool holds too: prompts go in whole
        }
        long most = (long) (windowPool.capacityBlocks() - 1) * windowPool.blockSize() - windowPool.window() + 1;
        if (most < 1) {
            throw new IllegalArgumentException("a window pool of " + windowPool.capacityBlocks() + " blocks of "
                    + windowPool.blockSize() + " cannot hold a window of " + windowPool.window() + " positions and a new token");
        }
        return (int) Math.min(most, maxBatchTokens);
    }

    /** A pure decode step through a replayed graph: logits [bucket, vocab] (padding rows unused); null to run eagerly. */
    private Tensor decodeByGraph(List<CausalLM.Segment> segments) {
        if (graphs == null) {
            return null;
        }
        org.orbitrl.model.adapter.Adapter adapter = slots == null ? null : slots.active();
        return graphs.forward(segments, adapter, adapter == null || slots.enabled() && adapter.enabled());
    }

    /** Samples the next token of {@code s} from its logits row and applies the stop rules. */
    private void accept(Seq s, int token, float policyLogprob, float sampledLogprob, long version, List<Completion> finished) {
        SamplingParams p = s.request.params();
        s.tokens.add(token);
        s.policy.add(policyLogprob);
        s.sampled.add(sampledLogprob);
        s.versions.add(version);
        generated++;
        s.pendingInput = new int[]{token};
        FinishReason reason = null;
        if (p.stopTokenIds().contains(token)) {
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

    /**
     * Preempts the youngest running sequences until every decoding one can take its next token and the step feeds
     * something; returns the step's plan for the sequences left.
     */
    private Plan makeRoom() {
        while (true) {
            Plan p = plan();
            if (running.isEmpty() || p.fits() && !p.feeds().isEmpty()) {
                return p;
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
            youngest.fed = 0;
            waiting.addFirst(youngest);
        }
    }

    /**
     * Admits preempted sequences, then new requests, while blocks, batch slots and tokens allow beside what the running
     * ones take in the step ({@code room}).
     */
    private void admit(List<Completion> finished, Plan room) {
        int slots = 0;   // running sequences, and the siblings a group's first sample forks at its first draw
        for (Seq s : running) {
            slots += 1 + siblingsToFork(s);
        }
        int tokens = room.tokens();
        int reserved = room.blocks();
        int windowReserved = room.windowBlocks();   // of the window pool, where there is one
        int windowFree = windowPool == null ? Integer.MAX_VALUE : windowPool.freeBlocks();
        while (!waiting.isEmpty()) {
            Seq s = waiting.peekFirst();
            int n = s.pendingInput.length;
            int siblings = siblingsToFork(s);   // a group's first sample preempted before its first draw
            int blocks = (n + options.blockSize() - 1) / options.blockSize() + siblings;
            int first = Math.min(n, prefillChunk);   // a window pool's prefill: in chunks, each holding its blocks until done
            int windowBlocks = (first + options.blockSize() - 1) / options.blockSize();
            if (blocks + 1 > pool.capacityBlocks()) {   // can never fit again: end it rather than wait forever
                waiting.pollFirst();
                aborted++;
                finished.add(finish(s, FinishReason.ABORTED));
                continue;
            }
            if (slots + 1 + siblings > options.maxRunning() || tokens + first > options.maxBatchTokens() && !running.isEmpty()
                    || blocks + reserved > pool.freeBlocks() || windowBlocks + windowReserved > windowFree) {
                break;
            }
            waiting.pollFirst();
            s.cache = new PagedSequence(pool, windowPool);
            s.admittedAt = ++admissions;
            reserved += blocks;
            windowReserved += windowBlocks;
            tokens += first;
            slots += 1 + siblings;
            running.add(s);
        }
        while (!newRequests.isEmpty()) {
            Request r = newRequests.peekFirst();
            int n = r.prompt().length;
            int blocks = (n + options.blockSize() - 1) / options.blockSize() + r.samples();   // and each sample's copy
            int first = Math.min(n, prefillChunk);
            int windowBlocks = (first + options.blockSize() - 1) / options.blockSize();   // the samples' copies come later
            if (blocks > pool.capacityBlocks() || r.samples() > options.maxRunning()) {   // can never fit: end it
                newRequests.pollFirst();
                aborted += r.samples();
                for (int k = 0; k < r.samples(); k++) {
                    Seq s = new Seq(r, k);
                    finished.add(finish(s, FinishReason.ABORTED));
                }
                continue;
            }
            if (slots + r.samples() > options.maxRunning() || tokens + first > options.maxBatchTokens() && !running.isEmpty()
                    || blocks + reserved > pool.freeBlocks() || windowBlocks + windowReserved > windowFree) {
                break;
            }
            newRequests.pollFirst();
            Seq s = new Seq(r, 0);
            s.cache = new PagedSequence(pool, windowPool);
            s.pendingInput = r.prompt();
            s.admittedAt = ++admissions;
            reserved += blocks;
            windowReserved += windowBlocks;
            tokens += first;
            slots += r.samples();
            running.add(s);
        }
    }

    /** The siblings {@code s} forks at its first draw: a group's first sample's, until it has drawn. */
    private static int siblingsToFork(Seq s) {
        return s.sample == 0 && s.tokens.isEmpty() ? s.request.samples() - 1 : 0;
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

    /** Frees the captured decode steps and their arenas, and every running sequence's blocks. */
    @Override
    public void close() {
        if (graphs != null) {
            graphs.close();
        }
        running.forEach(s -> {
            if (s.cache != null) {
                s.cache.close();
            }
        });
        running.clear();
    }
}
