package org.orbitrl.kernels.cuda.internal;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The measuring aid {@code -Dorbit.cuda.carveout=PERCENT:REGEX} (no GPU needed): the carveout a launch of a kernel asks
 * for, none where unset or where the whole name does not match, the value read again at each launch, and malformed
 * values errors that name the property.
 */
class LauncherCarveoutTest {

    @Test
    void theCarveoutOfAKernelsLaunch() {
        String key = Launcher.CARVEOUT_PROPERTY;
        assertEquals(-1, valueWithProperty(key, null, () -> Launcher.carveout("qgemv_down_combine_pre_int4")), "none by default");
        String regex = "100:(qgemv_down.*|bgemv_norm_scale_s[ta]1)";
        assertEquals(100, valueWithProperty(key, regex, () -> Launcher.carveout("qgemv_down_combine_pre_et_int4")));
        assertEquals(100, valueWithProperty(key, regex, () -> Launcher.carveout("bgemv_norm_scale_sa1")));
        assertEquals(-1, valueWithProperty(key, regex, () -> Launcher.carveout("bgemv_norm_scale_st1x")), "the whole name matches");
        assertEquals(-1, valueWithProperty(key, regex, () -> Launcher.carveout("moe_router_norm_topk_rk_pre")));
        assertEquals(0, valueWithProperty(key, "0:moe_.*", () -> Launcher.carveout("moe_router_norm_topk_rk_pre")),
                "read again at each launch");
        assertEquals(-1, valueWithProperty(key, "", () -> Launcher.carveout("moe_route")));
    }

    @Test
    void malformedValuesNameTheProperty() {
        String key = Launcher.CARVEOUT_PROPERTY;
        for (String bad : new String[]{"101:.*", "-1:.*", "max:.*", "moe_.*", "50:moe_(route"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                    () -> valueWithProperty(key, bad, () -> Launcher.carveout("moe_route")), bad);
            assertTrue(e.getMessage().contains("orbit.cuda.carveout=" + bad), e.getMessage());
        }
    }

    /** {@code body}'s value with the system property {@code key} set to {@code value} (null: cleared), the old value restored after. */
    private static <T> T valueWithProperty(String key, String value, java.util.function.Supplier<T> body) {
        String old = System.getProperty(key);
        if (value == null) {
            System.clearProperty(key);
        } else {
            System.setProperty(key, value);
        }
        try {
            return body.get();
        } finally {
            if (old == null) {
                System.clearProperty(key);
            } else {
                System.setProperty(key, old);
            }
        }
    }
}
