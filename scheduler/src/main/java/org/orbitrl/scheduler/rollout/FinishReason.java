package org.orbitrl.scheduler.rollout;

/** Why a sample ended. */
public enum FinishReason {
    /** A stop token or stop string was produced. */
    STOP,
    /** max_new_tokens was reached. */
    LENGTH,
    /** Aborted by the caller, or the request can never fit the cache. */
    ABORTED
}
