package org.orbitrl.model.arch.dsv4;

import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Samples one thread's stack every millisecond while some work runs, counting each sample by the thread's innermost
 * three frames of the model's code: where a bench's host time goes, beside {@link org.orbitrl.kernels.OpProfiler}'s
 * operations.
 */
final class StackSampler {
    private StackSampler() {
    }

    /** Runs {@code work} on this thread, sampled; returns the {@code top} commonest frame keys with their counts. */
    static String sample(Runnable work, int top) {
        Map<String, Integer> samples = new HashMap<>();
        Thread main = Thread.currentThread();
        AtomicBoolean done = new AtomicBoolean();
        Thread sampler = new Thread(() -> {
            while (!done.get()) {
                StringBuilder key = new StringBuilder();
                int n = 0;
                for (StackTraceElement e : main.getStackTrace()) {
                    if (e.getClassName().startsWith("org.orbitrl.model") && n < 3) {
                        key.append(e.getClassName().replaceAll(".*\\.", "")).append('.').append(e.getMethodName())
                                .append(':').append(e.getLineNumber()).append(' ');
                        n++;
                    }
                }
                synchronized (samples) {
                    samples.merge(key.toString(), 1, Integer::sum);
                }
                try {
                    Thread.sleep(1);
                } catch (InterruptedException e) {
                    return;
                }
            }
        });
        sampler.setDaemon(true);
        sampler.start();
        try {
            work.run();
        } finally {
            done.set(true);
        }
        try {
            sampler.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        int total = samples.values().stream().mapToInt(Integer::intValue).sum();
        StringBuilder out = new StringBuilder("the calling thread's samples (" + total + "), by innermost model frames:\n");
        samples.entrySet().stream().sorted((x, y) -> y.getValue() - x.getValue()).limit(top)
                .forEach(e -> out.append(String.format("%6d  %s%n", e.getValue(), e.getKey())));
        return out.toString();
    }
}
