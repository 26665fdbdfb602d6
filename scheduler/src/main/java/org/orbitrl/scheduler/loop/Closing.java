package org.orbitrl.scheduler.loop;

import java.util.Arrays;
import java.util.List;

/** Closing several owned things in order: every one of them, even when an earlier one fails. */
final class Closing {
    private Closing() {
    }

    /** Closes {@code things} in order (nulls skipped); the first failure with the later ones suppressed under it, or null. */
    static Exception all(List<? extends AutoCloseable> things) {
        Exception first = null;
        for (AutoCloseable c : things) {
            if (c == null) {
                continue;
            }
            try {
                c.close();
            } catch (Exception e) {
                if (first == null) {
                    first = e;
                } else {
                    first.addSuppressed(e);
                }
            }
        }
        return first;
    }

    /** As {@link #all(List)}, its failure thrown unchecked. */
    static void orThrow(AutoCloseable... things) {
        Exception f = all(Arrays.asList(things));
        if (f != null) {
            throw f instanceof RuntimeException r ? r : new IllegalStateException(f.getMessage(), f);
        }
    }

    /** Closes {@code things} after {@code failure} (what was made before it failed), their failures suppressed under it. */
    static void after(Throwable failure, AutoCloseable... things) {
        Exception f = all(Arrays.asList(things));
        if (f != null) {
            failure.addSuppressed(f);
        }
    }
}
