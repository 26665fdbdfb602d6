package org.orbitrl.scheduler.rollout;

/** Turns generated token ids into text, for stop strings. */
@FunctionalInterface
public interface TextDecoder {
    String decode(int[] ids);
}
