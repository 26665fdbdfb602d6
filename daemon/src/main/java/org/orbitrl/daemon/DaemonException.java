package org.orbitrl.daemon;

/** The daemon cannot start or run; carries the exit code {@link Main} exits with (sysexits.h values). */
public final class DaemonException extends Exception {
    /** Configuration error (EX_CONFIG). */
    public static final int CONFIG = 78;
    /** Another daemon holds the data directory (EX_TEMPFAIL: systemd retries). */
    public static final int IN_USE = 75;
    /** An operating-system resource failed: files, sockets (EX_OSERR). */
    public static final int OS = 71;
    /** Wrong command line (EX_USAGE). */
    public static final int USAGE = 64;

    private final int exitCode;

    public DaemonException(int exitCode, String message) {
        super(message);
        this.exitCode = exitCode;
    }

    public DaemonException(int exitCode, String message, Throwable cause) {
        super(message, cause);
        this.exitCode = exitCode;
    }

    public int exitCode() {
        return exitCode;
    }
}
