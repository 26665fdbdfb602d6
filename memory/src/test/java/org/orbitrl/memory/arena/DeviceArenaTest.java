package org.orbitrl.memory.arena;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.EnumMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;

/** The arena on host memory: accounting, enforcement of the budget, teardown of a job. */
class DeviceArenaTest {
    private static final long KIB = 1024;

    private static ArenaBudget budget(Object... kv) {
        Map<MemoryCategory, Long> m = new EnumMap<>(MemoryCategory.class);
        for (int i = 0; i < kv.length; i += 2) {
            m.put((MemoryCategory) kv[i], (Long) kv[i + 1]);
        }
        return new ArenaBudget(m);
    }

    @Test
    void jobTeardownFreesEverythingItHeld() {
        try (HostMemory mem = new HostMemory(1L << 30);
             DeviceArena arena = new DeviceArena(mem, ArenaBudget.unlimited(), org.orbitrl.memory.plan.GpuRole.COLOCATED)) {
            Tensor base = arena.allocate(MemoryCategory.BASE_WEIGHTS, DType.BF16, 1000, 3);   // 6000 B -> 6144
            JobScope job = arena.openJob("job-1");
            SplittableRandom rnd = new SplittableRandom(7);
            long expected = 0;
            List<Tensor> held = new ArrayList<>();
            for (int i = 0; i < 50; i++) {
                MemoryCategory c = MemoryCategory.values()[rnd.nextInt(MemoryCategory.values().length)];
                long n = 1 + rnd.nextInt(5000);
                held.add(job.allocate(c, DType.F32, n));
                expected += (n * 4 + 255) / 256 * 256;
            }
            JobScope step = job.openScope();
            step.allocate(MemoryCategory.ACTIVATIONS, DType.BF16, 4096, 16);
            expected += 4096 * 16 * 2;
            assertEquals(expected, arena.liveOfJob("job-1"), "bytes the job holds");
            assertEquals(expected + 6144, arena.liveTotal());

            Tensor t = held.get(3);
            t.setFloat(2.5f, 0);
            assertEquals(2.5f, t.getFloat(0), "allocated memory is usable");
            job.close();

            assertEquals(0, arena.liveOfJob("job-1"), "a closed job holds nothing");
            for (MemoryCategory c : MemoryCategory.values()) {
                assertEquals(c == MemoryCategory.BASE_WEIGHTS ? 6144 : 0, arena.live(c), c + " live after teardown");
            }
            assertEquals(expected + 6144, arena.peakTotal(), "peak remembers the job");
            assertEquals(1, mem.outstanding(), "only the base weights are still allocated on the device");
            assertThrows(IllegalStateException.class, () -> t.getFloat(0), "a freed tensor cannot be read");
            assertThrows(IllegalStateException.class, () -> job.allocate(MemoryCategory.OTHER, DType.F32, 1));
            assertEquals(0f, base.getFloat(999, 2), "arena-lifetime memory survives and is zero-filled");
        }
    }

    @Test
    void allocationsAreZeroFilledAndAligned() {
        try (HostMemory mem = new HostMemory(1L << 30);
             DeviceArena arena = new DeviceArena(mem, ArenaBudget.unlimited(), org.orbitrl.memory.plan.GpuRole.COLOCATED);
             JobScope job = arena.openJob("j")) {
            for (int i = 1; i < 40; i += 7) {
                Tensor t = job.allocate(MemoryCategory.OTHER, DType.BF16, i, 3);
                assertEquals(0, t.segment().address() % mem.alignment(), "alignment of allocation " + i);
                for (float v : t.toFloatArray()) {
                    assertEquals(0f, v);
                }
            }
        }
    }

    @Test
    void refusesAnAllocationThatBreaksItsCategoryBudget() {
        try (HostMemory mem = new HostMemory(1L << 30);
             DeviceArena arena = new DeviceArena(mem, budget(MemoryCategory.KV_CACHE, 1000 * KIB,
                     MemoryCategory.ACTIVATIONS, 10_000 * KIB), org.orbitrl.memory.plan.GpuRole.COLOCATED);
             JobScope job = arena.openJob("rollout")) {
            job.allocate(MemoryCategory.KV_CACHE, DType.BF16, 300 * KIB);                 // 600 KiB
            JobScope step = job.openScope();
            step.allocate(MemoryCategory.KV_CACHE, DType.BF16, 150 * KIB);                // 900 KiB live
            AllocationRefusedException e = assertThrows(AllocationRefusedException.class,
                    () -> job.allocate(MemoryCategory.KV_CACHE, DType.BF16, 100 * KIB));  // 200 KiB more: 1100 > 1000
            assertEquals(MemoryCategory.KV_CACHE, e.category());
            assertEquals(200 * KIB, e.requested());
            assertEquals(1000 * KIB, e.budget());
            assertEquals(900 * KIB, e.live());
            assertEquals("rollout", e.job());
            assertTrue(e.getMessage().contains("KV_CACHE") && e.getMessage().contains("budgeted"), e.getMessage());
            assertEquals(900 * KIB, arena.live(MemoryCategory.KV_CACHE), "a refused allocation changes nothing");
            assertEquals(2, mem.outstanding(), "and never reaches the device");

            // Other categories are independent; a category without a budget holds nothing.
            job.allocate(MemoryCategory.ACTIVATIONS, DType.F32, 1000 * KIB);
            AllocationRefusedException other = assertThrows(AllocationRefusedException.class,
                    () -> job.allocate(MemoryCategory.OTHER, DType.U8, 1));
            assertEquals(0, other.budget());

            step.close();                                                                 // frees 300 KiB
            job.allocate(MemoryCategory.KV_CACHE, DType.BF16, 100 * KIB);
            assertEquals(800 * KIB, arena.live(MemoryCategory.KV_CACHE));
            assertEquals(900 * KIB, arena.peak(MemoryCategory.KV_CACHE));
        }
    }

    @Test
    void refusesBeforeTheDeviceRunsOut() {
        try (HostMemory mem = new HostMemory(64 * KIB);
             DeviceArena arena = new DeviceArena(mem, ArenaBudget.unlimited(), org.orbitrl.memory.plan.GpuRole.COLOCATED);
             JobScope job = arena.openJob("big")) {
            job.allocate(MemoryCategory.BASE_WEIGHTS, DType.U8, 40 * KIB);
            AllocationRefusedException e = assertThrows(AllocationRefusedException.class,
                    () -> job.allocate(MemoryCategory.ACTIVATIONS, DType.U8, 30 * KIB));
            assertEquals(MemoryCategory.ACTIVATIONS, e.category());
            assertEquals(64 * KIB, e.budget(), "the device's capacity");
            assertEquals(40 * KIB, e.live());
        }
    }

    @Test
    void concurrentAllocationsNeverExceedTheBudget() throws Exception {
        long size = 4 * KIB;
        int fit = 37;
        try (HostMemory mem = new HostMemory(1L << 30);
             DeviceArena arena = new DeviceArena(mem, budget(MemoryCategory.ACTIVATIONS, fit * size),
                     org.orbitrl.memory.plan.GpuRole.COLOCATED)) {
            AtomicInteger ok = new AtomicInteger();
            AtomicInteger refused = new AtomicInteger();
            ExecutorService pool = Executors.newFixedThreadPool(4);
            List<JobScope> scopes = new ArrayList<>();
            List<Future<?>> fs = new ArrayList<>();
            for (int w = 0; w < 4; w++) {
                JobScope s = arena.openJob("worker-" + w);
                scopes.add(s);
                fs.add(pool.submit(() -> {
                    for (int i = 0; i < 25; i++) {
                        try {
                            s.allocate(MemoryCategory.ACTIVATIONS, DType.U8, size);
                            ok.incrementAndGet();
                        } catch (AllocationRefusedException e) {
                            refused.incrementAndGet();
                        }
                        assertTrue(arena.live(MemoryCategory.ACTIVATIONS) <= fit * size);
                    }
                }));
            }
            for (Future<?> f : fs) {
                f.get();
            }
            pool.shutdown();
            assertEquals(fit, ok.get(), "exactly the budget's worth succeeded");
            assertEquals(100 - fit, refused.get());
            assertEquals(fit * size, arena.peak(MemoryCategory.ACTIVATIONS));
            scopes.forEach(JobScope::close);
            assertEquals(0, arena.liveTotal());
        }
    }

    @Test
    void closingTheArenaFreesOpenJobs() {
        HostMemory mem = new HostMemory(1L << 30);
        DeviceArena arena = new DeviceArena(mem, ArenaBudget.unlimited(), org.orbitrl.memory.plan.GpuRole.COLOCATED);
        arena.allocate(MemoryCategory.BASE_WEIGHTS, DType.F32, 100);
        JobScope a = arena.openJob("a");
        a.allocate(MemoryCategory.KV_CACHE, DType.F32, 100);
        a.openScope().allocate(MemoryCategory.LOGITS, DType.F32, 100);
        arena.openJob("b").allocate(MemoryCategory.ACTIVATIONS, DType.F32, 100);
        assertEquals(4, mem.outstanding());
        arena.close();
        assertEquals(0, mem.outstanding(), "nothing left on the device");
        assertEquals(0, arena.liveTotal());
        assertThrows(IllegalStateException.class, () -> arena.openJob("c"));
        mem.close();
    }
}
