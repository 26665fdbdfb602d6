package org.orbitrl.scheduler.log;

/**
 * Response tokens from {@code start} up to the next span's start (or the end) were generated
 * by adapter version {@code version}. A sample whose generation crossed a version switch has
 * several spans.
 *
 * @param start   index of the first response token of the span
 * @param version the adapter version that generated them
 */
public record VersionSpan(int start, long version) {
    public VersionSpan {
        if (start < 0 || version < 0) {
            throw new IllegalArgumentException("a version span needs start >= 0 and version >= 0, got start " + start
                    + ", version " + version);
        }
    }
}
