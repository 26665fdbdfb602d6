package org.orbitrl.model.arch.dsv4;

import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Samples one thread's stack every millisecond while some work runs, counting each sample by the thread's innermost
 * three frames of the model's code, and again by its innermost three frames of any code (a launch, a copy, a wait):
 * where a bench's host time goes, beside {@link org.orbitrl.kernels.OpProfiler}'s operations.
 */
final class StackSampler {
    private StackSampler() {
    }

    /** Runs {@code work} on this thread, sampled; returns the {@code top} commonest frame keys with their counts. */
    static String sample(Runnable work, int top) {
        Map<String, Integer> samples = new HashMap<>();
        Map<String, Integer> tops = new HashMap<>();
        Thread main = Thread.currentThread();
        AtomicBoolean done = new AtomicBoolean();
        Thread sampler = new Thread(() -> {
            while (!done.get()) {
                StringBuilder key = new StringBuilder();
                StringBuilder inner = new StringBuilder();
                int n = 0;
                int t = 0;
                for (StackTraceElement e : main.getStackTrace()) {
                    String frame = e.getClassName().replaceAll(".*\\.", "") + "." + e.getMethodName() + ":" + e.getLineNumber() + " ";
                    if (t < 3) {
                        inner.append(frame);
                        t++;
                    }
                    if (e.getClassName().startsWith("org.orbitrl.model") && n < 3) {
                        key.append(frame);
                        n++;
                    }
                }
                synchronized (samples) {
                    samples.merge(key.toString(), 1, Integer::sum);
                    tops.merge(inner.toString(), 1, Integer::sum);
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
        out.append("by innermost frames of any code:\n");
        tops.entrySet().stream().sorted((x, y) -> y.getValue() - x.getValue()).limit(top)
                .forEach(e -> out.append(String.format("%6d  %s%n", e.getValue(), e.getKey())));
        return out.toString();
    }
}
