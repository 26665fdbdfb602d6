package org.orbitrl.kernels.cuda;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.orbitrl.kernels.DType;
import org.orbitrl.kernels.MemoryCategory;
import org.orbitrl.kernels.Tensor;

import java.util.SplittableRandom;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * {@link CudaAllocator#sideStreamOf}: an adapter version copied into a rollout engine's slot from another thread while
 * the engine's thread captures a decode step on its own stream. The copy lands when the side stream is synchronised,
 * before the capture ends, bit for bit; the captured graph holds only the engine's own work (replayed, it computes its
 * product again and leaves the slot as the copy left it, though the source has changed since). A copy enqueued on the
 * engine's stream instead would have joined the graph: not run at the synchronise, and run again at every replay.
 */
class CudaSideStreamCopyTest {
    @BeforeAll
    static void needCuda() {
        assumeTrue(Cuda.available(), () -> "no CUDA device: " + Cuda.unavailableReason());
    }

    private static float[] random(SplittableRandom r, int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return v;
    }

    @Test
    void aCopyDuringAnotherThreadsCaptureLandsAndStaysOutOfTheGraph() throws Exception {
        try (CudaBackend trainer = new CudaBackend(0, CudaBackend.defaultCacheDir());
             CudaBackend engine = new CudaBackend(trainer, true);
             CudaAllocator side = CudaAllocator.sideStreamOf(engine.allocator())) {
            SplittableRandom r = new SplittableRandom(23);
            int n = 3 << 20;   // 12 MiB, an adapter tensor's order
            float[] v = random(r, n);
            float[] xs = random(r, 4096);
            Tensor src = trainer.allocator().uploadFloats(MemoryCategory.ADAPTER_PARAMS, v, n);
            Tensor slot = engine.allocator().allocate(MemoryCategory.ADAPTER_PARAMS, DType.F32, n);
            Tensor x = engine.allocator().uploadFloats(MemoryCategory.ACTIVATIONS, xs, xs.length);
            Tensor y = engine.allocator().allocate(MemoryCategory.ACTIVATIONS, DType.F32, xs.length);
            engine.synchronize();
            trainer.synchronize();

            CountDownLatch capturing = new CountDownLatch(1);
            CountDownLatch copied = new CountDownLatch(1);
            CompletableFuture<CudaGraph> captured = CompletableFuture.supplyAsync(() -> {
                engine.device().bind();
                return CudaGraph.capture(engine.stream(), () -> {
                    capturing.countDown();
                    try {
                        assertTrue(copied.await(60, TimeUnit.SECONDS), "the publishing thread's copy");
                    } catch (InterruptedException e) {
                        throw new IllegalStateException(e);
                    }
                    engine.scale(x, 2f, y);
                });
            });
            assertTrue(capturing.await(60, TimeUnit.SECONDS), "the engine thread's capture began");
            side.copy(src, slot);
            side.synchronize();
            float[] landed = side.toFloats(slot);
            copied.countDown();
            assertArrayEquals(v, landed, "the slot after the side stream's synchronise, during the capture");

            try (CudaGraph g = captured.get(60, TimeUnit.SECONDS)) {
                trainer.scale(src, 5f, src);   // a later version in the source; the graph must not copy it
                trainer.synchronize();
                g.launch(engine.stream());
                engine.synchronize();
                float[] twice = new float[xs.length];
                for (int i = 0; i < xs.length; i++) {
                    twice[i] = xs[i] * 2f;
                }
                assertArrayEquals(twice, engine.allocator().toFloats(y), "the graph's own product, replayed");
                assertArrayEquals(v, engine.allocator().toFloats(slot), "the slot after a replay of the graph");
            }
        }
    }
}
