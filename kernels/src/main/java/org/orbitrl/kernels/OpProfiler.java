package org.orbitrl.kernels;

import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Where a workload's time goes, operation by operation: a {@link Backend} that forwards every call
 * to another one, waits for the device after each ({@code sync}), and adds the elapsed time to the
 * operation's name and argument shapes. Because every operation is waited for, the figures are
 * each operation's own time (device time plus launch cost), not the overlapped time of a normal
 * run; the difference between a profiled region's wall time and the sum of its operations is the
 * host's share (Java code, allocation, copies to and from the host, collections).
 *
 * <p>Nested calls (an operation the backend implements through others) are counted once, under the
 * outer name. A diagnostic: the wrapped backend is slower than the one it wraps.
 */
public final class OpProfiler {
    private static final Set<String> PASS_THROUGH = Set.of("name", "allocator", "close", "exact", "toString", "hashCode", "equals");

    private final Backend target;
    private final Runnable sync;
    private final Map<String, long[]> totals = new HashMap<>();   // key -> {calls, nanos}
    private final Backend proxy;
    private long wallStart = System.nanoTime();
    private volatile String phase = "";

    private OpProfiler(Backend target, Runnable sync) {
        this.target = target;
        this.sync = sync;
        InvocationHandler h = this::invoke;
        this.proxy = (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[]{Backend.class}, h);
    }

    /**
     * Profiles {@code target}; {@code sync} waits until the work issued so far has finished (for a
     * host backend, a no-op).
     */
    public static OpProfiler wrap(Backend target, Runnable sync) {
        return new OpProfiler(target, sync);
    }

    /** The profiling backend to hand to the workload. */
    public Backend backend() {
        return proxy;
    }

    /**
     * Counts what follows under {@code name} (keys read {@code name/op ...}) until the next call;
     * an empty name counts without a prefix.
     */
    public void phase(String name) {
        phase = name.isEmpty() ? "" : name + "/";
    }

    /** Forgets what was counted so far and restarts the wall clock (after a warm-up, say). */
    public synchronized void reset() {
        totals.clear();
        wallStart = System.nanoTime();
    }

    private Object invoke(Object self, Method m, Object[] args) throws Throwable {
        if (PASS_THROUGH.contains(m.getName()) || m.getDeclaringClass() == Object.class) {
            return call(m, args);
        }
        long t0 = System.nanoTime();
        Object r = call(m, args);
        sync.run();
        long dt = System.nanoTime() - t0;
        String key = phase + key(m, args);
        synchronized (this) {
            long[] t = totals.computeIfAbsent(key, k -> new long[2]);
            t[0]++;
            t[1] += dt;
        }
        return r;
    }

    private Object call(Method m, Object[] args) throws Throwable {
        try {
            return m.invoke(target, args);
        } catch (InvocationTargetException e) {
            throw e.getCause();
        }
    }

    /** The operation's name and the shapes of its first two tensor arguments. */
    private static String key(Method m, Object[] args) {
        StringBuilder sb = new StringBuilder(m.getName());
        int shown = 0;
        if (args != null) {
            for (Object a : args) {
                if (shown == 2) {
                    break;
                }
                if (a instanceof Tensor t) {
                    sb.append(shown == 0 ? " " : " x ").append(java.util.Arrays.toString(t.shape())).append(' ').append(t.dtype());
                    shown++;
                }
            }
        }
        return sb.toString();
    }

    /**
     * A table of the {@code top} costliest operation keys: calls, total ms, mean µs and share of the
     * wall time since the last {@link #reset}, then the host's share.
     */
    public synchronized String report(int top) {
        double wallMs = (System.nanoTime() - wallStart) / 1e6;
        List<Map.Entry<String, long[]>> rows = new ArrayList<>(totals.entrySet());
        rows.sort((a, b) -> Long.compare(b.getValue()[1], a.getValue()[1]));
        Map<String, long[]> byOp = new HashMap<>();
        long sum = 0;
        for (Map.Entry<String, long[]> e : rows) {
            String op = e.getKey().split(" ", 2)[0];
            long[] t = byOp.computeIfAbsent(op, k -> new long[2]);
            t[0] += e.getValue()[0];
            t[1] += e.getValue()[1];
            sum += e.getValue()[1];
        }
        StringBuilder sb = new StringBuilder();
        sb.append(String.format("profile: wall %.1f ms, operations %.1f ms (%.1f%%), host and copies %.1f ms%n",
                wallMs, sum / 1e6, 100 * sum / 1e6 / wallMs, wallMs - sum / 1e6));
        sb.append("by operation:\n");
        List<Map.Entry<String, long[]>> ops = new ArrayList<>(byOp.entrySet());
        ops.sort((a, b) -> Long.compare(b.getValue()[1], a.getValue()[1]));
        for (Map.Entry<String, long[]> e : ops) {
            sb.append(line(e.getKey(), e.getValue(), wallMs));
        }
        sb.append("by operation and shapes (top ").append(top).append("):\n");
        for (int i = 0; i < Math.min(top, rows.size()); i++) {
            sb.append(line(rows.get(i).getKey(), rows.get(i).getValue(), wallMs));
        }
        return sb.toString();
    }

    private static String line(String key, long[] t, double wallMs) {
        return String.format("  %9d calls %10.1f ms %9.1f us/call %5.1f%%  %s%n", t[0], t[1] / 1e6, t[1] / 1e3 / t[0],
                100 * t[1] / 1e6 / wallMs, key);
    }
}
