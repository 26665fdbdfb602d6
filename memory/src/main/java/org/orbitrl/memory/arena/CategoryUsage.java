package org.orbitrl.memory.arena;

/**
 * Bytes one category holds now and has held at most.
 *
 * @param live bytes allocated and not yet freed
 * @param peak the most {@code live} has been since the arena opened
 */
public record CategoryUsage(long live, long peak) {
}
