package org.orbitrl.scheduler.job;

/** Where prompts and their verifiable answers come from. */
public enum TaskKind {
    /** Multi-digit addition, generated from the seed. */
    ADDITION,
    /** Sorting a list of integers, generated from the seed. */
    SORT,
    /** Countdown: reach a target from given numbers with + − × ÷, generated from the seed. */
    COUNTDOWN,
    /** A JSONL file of {@code {"prompt": ..., "answer": ...}} lines. */
    JSONL
}
