package org.orbitrl.scheduler.log;

/** The sample log could not be read or written: a corrupt entry, a missing index, a failed append. */
public final class SampleLogException extends RuntimeException {
    public SampleLogException(String message) {
        super(message);
    }

    public SampleLogException(String message, Throwable cause) {
        super(message, cause);
    }
}
