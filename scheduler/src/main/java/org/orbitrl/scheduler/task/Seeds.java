package org.orbitrl.scheduler.task;

/** Mixing of seeds and keys into well-spread 64-bit values (SplitMix64's finaliser). */
final class Seeds {

    private Seeds() {
    }

    /** SplitMix64's output function: a bijection of 64-bit values that spreads every input bit. */
    static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xbf58476d1ce4e5b9L;
        z = (z ^ (z >>> 27)) * 0x94d049bb133111ebL;
        return z ^ (z >>> 31);
    }

    /** A seed for stream {@code key} of {@code seed}: distinct keys give unrelated streams. */
    static long mix(long seed, long key) {
        return mix(mix(seed + 0x9e3779b97f4a7c15L) ^ (key * 0xc2b2ae3d27d4eb4fL + 0x165667b19e3779f9L));
    }
}
