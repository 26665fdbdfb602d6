package org.orbitrl.scheduler.rollout;

import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.Tensor;
import org.orbitrl.model.LoadedModel;
import org.orbitrl.model.adapter.Adapter;
import org.orbitrl.model.adapter.AdapterConfig;
import org.orbitrl.model.adapter.AdapterSlots;
import org.orbitrl.model.adapter.LoraAdapter;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicReference;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Two adapter slots: a version published between steps serves exactly the following steps; and
 * with a publisher thread racing the engine, no step ever runs on a half-written adapter and every
 * sample's versions only move forward.
 */
class AdapterSlotsTest {

    static final AdapterConfig CFG = AdapterConfig.lora(4, 8, List.of("q_proj", "k_proj", "v_proj", "o_proj"),
            List.of("mlp.experts.gate_up_proj", "mlp.experts.down_proj"));

    /** An adapter (detached from any model the engine uses) whose every tensor holds {@code value}. */
    static void fill(Adapter a, float value) {
        for (Adapter.Param p : a.params()) {
            p.value().fill(value);
        }
    }

    @Test
    void aPublishedVersionServesTheStepsAfterTheSwitch() {
        try (LoadedModel m = RolloutEngineTest.model("qwen3_moe"); LoadedModel trainer = RolloutEngineTest.model("qwen3_moe")) {
            AdapterSlots slots = new AdapterSlots(m.targets(),
                    () -> LoraAdapter.create(CFG, m.targets(), m.model().backend().allocator(), 7), 0);
            LoraAdapter next = LoraAdapter.create(CFG, trainer.targets(), trainer.model().backend().allocator(), 8);
            for (Adapter.Param p : next.params()) {      // a visibly different policy
                p.value().fill(0.05f);
            }
            RolloutEngine e = new RolloutEngine(m.model(), slots, new RolloutEngine.Options(4, 128, 8, 256), null);
            int[] prompt = RolloutEngineTest.randomPrompt(new SplittableRandom(3), 6);
            e.submit(Request.of("a", prompt, SamplingParams.greedy(8)));
            List<Completion> done = new ArrayList<>();
            for (int step = 0; step < 4; step++) {
                done.addAll(e.step());
            }
            long bytes;
            try {
                bytes = slots.publish(next, 1);
            } catch (InterruptedException ex) {
                throw new AssertionError(ex);
            }
            assertEquals(next.parameterCount() * 4, bytes, "only the adapter moves");
            while (!e.idle()) {
                done.addAll(e.step());
            }
            Completion c = done.get(0);
            assertArrayEquals(new long[]{0, 0, 0, 0, 1, 1, 1, 1}, c.versions());
            assertTrue(!c.singleVersion());
            // the first four tokens are exactly what version 0 alone produces
            Completion only0;
            try (LoadedModel fresh = RolloutEngineTest.model("qwen3_moe")) {
                LoraAdapter.create(CFG, fresh.targets(), fresh.model().backend().allocator(), 7);
                only0 = new RolloutEngine(fresh.model(), null, new RolloutEngine.Options(4, 128, 8, 256), null)
                        .generate(List.of(Request.of("a", prompt, SamplingParams.greedy(8)))).get(0);
            }
            assertArrayEquals(java.util.Arrays.copyOf(only0.tokens(), 4), java.util.Arrays.copyOf(c.tokens(), 4));
            assertArrayEquals(java.util.Arrays.copyOf(only0.policyLogprobs(), 4), java.util.Arrays.copyOf(c.policyLogprobs(), 4), 0f);
            assertNotEquals(only0.policyLogprobs()[5], c.policyLogprobs()[5], "version 1 changed the policy");
        }
    }

    @Test
    void aNewerPublicationReplacesOneNotYetServedWithoutWaiting() throws Exception {
        try (LoadedModel m = RolloutEngineTest.model("qwen3_moe"); LoadedModel trainer = RolloutEngineTest.model("qwen3_moe")) {
            AdapterSlots slots = new AdapterSlots(m.targets(),
                    () -> LoraAdapter.create(CFG, m.targets(), m.model().backend().allocator(), 1), 0);
            fill(slots.active(), 0f);
            LoraAdapter src = LoraAdapter.create(CFG, trainer.targets(), trainer.model().backend().allocator(), 2);
            fill(src, 1e-3f);
            slots.publish(src, 1);
            fill(src, 2e-3f);
            Thread t = new Thread(() -> {
                try {
                    slots.publish(src, 2);   // version 1 is still waiting for a step: replaced, not waited for
                } catch (InterruptedException ex) {
                    Thread.currentThread().interrupt();
                }
            });
            t.start();
            t.join(10_000);
            assertTrue(!t.isAlive(), "the second publication returned without an engine step");
            assertEquals(0, slots.activeVersion(), "nothing switches before the engine's next step");
            assertEquals(2, slots.beginStep(), "the engine switches to the newest version");
            for (Adapter.Param p : slots.active().params()) {
                for (float x : p.value().toFloatArray()) {
                    assertEquals(2e-3f, x, 0f, "the serving slot holds version 2 whole: " + p.name());
                }
            }
            assertThrows(IllegalArgumentException.class, () -> slots.publish(src, 2), "versions only move forward");
        }
    }

    @Test
    void aRacingPublisherNeverTearsAStep() throws Exception {
        try (LoadedModel m = RolloutEngineTest.model("qwen3_moe"); LoadedModel trainer = RolloutEngineTest.model("qwen3_moe")) {
            AdapterSlots slots = new AdapterSlots(m.targets(),
                    () -> LoraAdapter.create(CFG, m.targets(), m.model().backend().allocator(), 1), 0);
            fill(slots.active(), 0f);
            LoraAdapter src = LoraAdapter.create(CFG, trainer.targets(), trainer.model().backend().allocator(), 2);
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread publisher = new Thread(() -> {
                try {
                    for (int v = 1; v <= 12; v++) {
                        fill(src, v * 1e-3f);
                        slots.publish(src, v);
                    }
                } catch (Throwable t) {
                    failure.set(t);
                }
            }, "publisher");
            RolloutEngine e = new RolloutEngine(m.model(), slots, new RolloutEngine.Options(4, 256, 16, 256), null);
            SplittableRandom rnd = new SplittableRandom(9);
            for (int i = 0; i < 6; i++) {
                e.submit(Request.of("r" + i, RolloutEngineTest.randomPrompt(rnd, 5), SamplingParams.sample(1f, 1f, 16, i)));
            }
            publisher.start();
            List<Completion> done = new ArrayList<>();
            while (!e.idle()) {
                done.addAll(e.step());
                // right after a step, the serving slot holds one whole version: every element equal to it
                long v = slots.activeVersion();
                for (Adapter.Param p : slots.active().params()) {
                    float[] vals = p.value().toFloatArray();
                    for (float x : vals) {
                        assertEquals(v * 1e-3f, x, 0f, "slot serving version " + v + " holds a torn tensor " + p.name());
                    }
                }
            }
            publisher.join(10_000);
            assertNull(failure.get());
            assertEquals(6, done.size());
            for (Completion c : done) {
                for (int i = 1; i < c.versions().length; i++) {
                    assertTrue(c.versions()[i] >= c.versions()[i - 1], "versions move forward only: " + java.util.Arrays.toString(c.versions()));
                }
            }
        }
    }
}
