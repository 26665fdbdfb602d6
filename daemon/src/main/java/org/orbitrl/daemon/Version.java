package org.orbitrl.daemon;

/** Orbit's version, as the daemon reports it. */
public final class Version {
    /** From the jar manifest when packaged, else the development version. */
    public static final String VERSION = version();

    private Version() {
    }

    private static String version() {
        String v = Version.class.getPackage().getImplementationVersion();
        return v == null ? "0.1.0-SNAPSHOT" : v;
    }
}
