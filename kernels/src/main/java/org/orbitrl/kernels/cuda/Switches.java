package org.orbitrl.kernels.cuda;

/** The backend's {@code on|off} and few-valued switches among its system properties, read at each call. */
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

    /**
     * {@code -Dkey} as one of {@code values} (surrounding blanks ignored), unset {@code byDefault}; any other value is an
     * error naming it and the values.
     */
    static String oneOf(String key, String byDefault, String... values) {
        String v = System.getProperty(key, byDefault).trim();
        for (String ok : values) {
            if (ok.equals(v)) {
                return v;
            }
        }
        String expected = values.length == 1 ? values[0]
                : String.join(", ", java.util.Arrays.copyOf(values, values.length - 1)) + " or " + values[values.length - 1];
        throw new IllegalArgumentException("-D" + key + "=" + v + ": expected " + expected);
    }
}
