package org.orbitrl.scheduler.job.yaml;

/**
 * A size in bytes, written with a unit in configuration files ({@code 512MiB}).
 *
 * @param bytes the size, not negative
 */
public record ByteSize(long bytes) implements Comparable<ByteSize> {
    public ByteSize {
        if (bytes < 0) {
            throw new IllegalArgumentException("a size cannot be negative: " + bytes);
        }
    }

    /** Parses {@code 512MiB}, {@code 2GiB}, {@code 10GB}. */
    public static ByteSize parse(String text) {
        return new ByteSize(Units.parseBytes(text));
    }

    public static ByteSize ofMiB(long mib) {
        return new ByteSize(Math.multiplyExact(mib, 1L << 20));
    }

    public static ByteSize ofGiB(long gib) {
        return new ByteSize(Math.multiplyExact(gib, 1L << 30));
    }

    @Override
    public int compareTo(ByteSize o) {
        return Long.compare(bytes, o.bytes);
    }

    /** The exact form {@link #parse} reads back. */
    @Override
    public String toString() {
        return Units.formatBytes(bytes);
    }
}
