package org.orbitrl.model.adapter;

import org.orbitrl.kernels.Backend;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.kernels.TensorAllocator;
import org.orbitrl.model.nn.AdapterTargets;
import org.orbitrl.model.nn.Linear;

import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;

/**
 * Two adapter slots on one rollout model: the active slot serves decoding while the next adapter
 * version streams into the idle one; {@link #beginStep} switches atomically, between decode
 * steps, so every token of a step is produced by exactly one version. Only adapter tensors move:
 * the base is never touched.
 *
 * <p>Threads: one engine thread calls {@link #beginStep}; any one publisher thread calls
 * {@link #publish}. The publisher writes only the idle slot, and the engine switches only to a
 * slot whose write has completed.
 */
public final class AdapterSlots {
    private final Adapter[] slots = new Adapter[2];
    private final long[] versions = {0, -1};
    private final boolean[] prepared = new boolean[2];   // the slot's adapter is ready to serve its values
    private volatile int active;
    private int pending = -1;
    private boolean writing;
    private volatile boolean enabled = true;
    private long publishedBytes;
    private final TensorAllocator memory;

    /**
     * Builds the two slots with {@code factory} (called twice; each call attaches an adapter of the
     * same config to {@code model}), and puts a dispatching hook on every adapted layer. Slot 0 is
     * active with version {@code initialVersion}.
     */
    public AdapterSlots(AdapterTargets model, Supplier<Adapter> factory, long initialVersion) {
        this(model, factory, initialVersion, TensorAllocator.heap());
    }

    /**
     * As {@link #AdapterSlots(AdapterTargets, Supplier, long)}, for adapters whose tensors live in
     * {@code memory} (a device allocator: publishing then copies device to device through it).
     */
    public AdapterSlots(AdapterTargets model, Supplier<Adapter> factory, long initialVersion, TensorAllocator memory) {
        this.memory = memory;
        List<Map<Linear, Linear.AdapterHook>> hooks = new ArrayList<>();
        for (int s = 0; s < 2; s++) {
            slots[s] = factory.get();
            Map<Linear, Linear.AdapterHook> m = new IdentityHashMap<>();
            for (Linear l : allLinears(model)) {
                if (l.adapter() != null) {
                    m.put(l, l.adapter());
                }
            }
            hooks.add(m);
        }
        if (!hooks.get(0).keySet().equals(hooks.get(1).keySet())) {
            throw new IllegalStateException("the two adapter slots adapt different layers");
        }
        for (Linear l : hooks.get(0).keySet()) {
            l.setAdapter(new SlotHook(hooks.get(0).get(l), hooks.get(1).get(l)));
        }
        versions[0] = initialVersion;
    }

    private static List<Linear> allLinears(AdapterTargets model) {
        List<Linear> out = new ArrayList<>(model.linearModules().values());
        for (AdapterTargets.ExpertSet s : model.expertSets()) {
            for (List<Linear> ls : List.of(s.gate(), s.up(), s.down())) {
                ls.stream().filter(java.util.Objects::nonNull).forEach(out::add);   // null: another rank's expert
            }
        }
        return out;
    }

    /** Applies a completed publish, if any, and returns the version that serves this step. */
    public synchronized long beginStep() {
        if (pending >= 0) {
            active = pending;
            pending = -1;
            notifyAll();
        }
        return versions[active];
    }

    /**
     * Readies the active slot's adapter to serve on {@code backend} ({@link Adapter#prepare}),
     * once per version it holds. The engine thread calls it after {@link #beginStep}, before the step's
     * forward; publishing into a slot makes it due again.
     */
    public void prepareActive(Backend backend) {
        int a;
        synchronized (this) {
            a = active;
            if (prepared[a]) {
                return;
            }
        }
        slots[a].prepare(backend);   // only the engine thread reads or writes the active slot
        synchronized (this) {
            prepared[a] = true;
        }
    }

    public synchronized long activeVersion() {
        return versions[active];
    }

    /** The adapter serving decode now (read-only for callers). */
    public synchronized Adapter active() {
        return slots[active];
    }

    /**
     * Copies {@code source}'s tensors (same config) into the idle slot as {@code version}; the switch
     * happens at the engine's next {@link #beginStep}. An earlier publication the engine has not
     * switched to yet is replaced (its version is never served): the publisher never waits for a
     * decode step. Returns the bytes copied.
     */
    public long publish(Adapter source, long version) throws InterruptedException {
        int target;
        synchronized (this) {
            while (writing) {
                wait();
            }
            long newest = Math.max(versions[0], versions[1]);
            if (version <= newest) {
                throw new IllegalArgumentException("adapter version " + version + " is not newer than " + newest);
            }
            pending = -1;            // the idle slot is written again: no switch to it until the copy completes
            target = 1 - active;
            writing = true;
            prepared[target] = false;
        }
        long bytes = 0;
        try {
            List<? extends Adapter.Param> dst = slots[target].params();
            List<? extends Adapter.Param> src = source.params();
            if (dst.size() != src.size()) {
                throw new IllegalArgumentException("published adapter has " + src.size() + " tensors, slots hold " + dst.size());
            }
            for (int i = 0; i < dst.size(); i++) {
                Tensor d = dst.get(i).value();
                memory.copy(src.get(i).value(), d);
                bytes += d.byteSize();
            }
        } finally {
            synchronized (this) {
                writing = false;
                notifyAll();
            }
        }
        synchronized (this) {
            versions[target] = version;
            pending = target;
            publishedBytes = bytes;
        }
        return bytes;
    }

    /** Bytes moved by the last publish. */
    public synchronized long lastPublishBytes() {
        return publishedBytes;
    }

    /** Turns both slots off (the base alone: the reference policy) or on. */
    public void setEnabled(boolean on) {
        enabled = on;
    }

    /** Whether the slots' adapters are applied ({@link #setEnabled}). */
    public boolean enabled() {
        return enabled;
    }

    private final class SlotHook implements Linear.AdapterHook {
        private final Linear.AdapterHook[] hooks;

        SlotHook(Linear.AdapterHook a, Linear.AdapterHook b) {
            this.hooks = new Linear.AdapterHook[]{a, b};
        }

        private Linear.AdapterHook current() {
            return hooks[active]; // read on the engine thread, which alone changes `active`
        }

        @Override
        public boolean enabled() {
            return enabled && current().enabled();
        }

        @Override
        public Tensor baseInput(Backend backend, Tensor x) {
            return current().baseInput(backend, x);
        }

        @Override
        public boolean transformsInput() {
            return current().transformsInput();
        }

        @Override
        public void forward(Backend backend, Tensor x, Tensor y) {
            current().forward(backend, x, y);
        }

        @Override
        public void backward(Backend backend, Tensor x, Tensor dy, Tensor dx) {
            current().backward(backend, x, dy, dx);
        }

        @Override
        public Linear.AdapterHook resolved() {
            return current().resolved();
        }
    }
}
