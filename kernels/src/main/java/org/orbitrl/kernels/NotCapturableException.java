package org.orbitrl.kernels;

/**
 * Thrown when work being captured for replay ({@link Backend#captureStep}) does something a
 * replay could not repeat: a host-to-device upload, a device-to-host read, a synchronisation,
 * an allocation beyond the step's arena. The message starts with {@code "not capturable: "} and
 * names the operation; callers fall back to running the step eagerly.
 */
public final class NotCapturableException extends IllegalStateException {

    public NotCapturableException(String operation) {
        super("not capturable: " + operation);
    }
}
