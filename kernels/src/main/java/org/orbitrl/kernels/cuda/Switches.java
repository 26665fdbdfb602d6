package org.orbitrl.kernels.cuda;

/** The backend's {@code on|off} switches among its system properties, read at each call. */
final class Switches {
    private Switches() {
    }

    /** {@code -Dkey}: {@code on} true, {@code off} false, unset {@code byDefault}; any other value is an error naming it. */
    static boolean onOff(String key, boolean byDefault) {
        String v = System.getProperty(key, byDefault ? "on" : "off");
        return switch (v) {
            case "on" -> true;
            case "off" -> false;
            default -> throw new IllegalArgumentException("-D" + key + "=" + v + ": expected on or off");
        };
    }
}
