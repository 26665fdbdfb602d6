package org.orbitrl.kernels.cuda.internal;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
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
    private String before;

    @BeforeEach
    void save() {
        before = System.getProperty(Launcher.CARVEOUT_PROPERTY);
    }

    @AfterEach
    void restore() {
        if (before == null) {
            System.clearProperty(Launcher.CARVEOUT_PROPERTY);
        } else {
            System.setProperty(Launcher.CARVEOUT_PROPERTY, before);
        }
    }

    @Test
    void theCarveoutOfAKernelsLaunch() {
        String key = Launcher.CARVEOUT_PROPERTY;
        System.clearProperty(key);
        assertEquals(-1, Launcher.carveout("qgemv_down_combine_pre_int4"), "none by default");
        System.setProperty(key, "100:(qgemv_down.*|bgemv_norm_scale_w1)");
        assertEquals(100, Launcher.carveout("qgemv_down_combine_pre_et_int4"));
        assertEquals(100, Launcher.carveout("bgemv_norm_scale_w1"));
        assertEquals(-1, Launcher.carveout("bgemv_norm_scale_w1x"), "the whole name matches");
        assertEquals(-1, Launcher.carveout("moe_router_norm_topk_rk_pre"));
        System.setProperty(key, "0:moe_.*");
        assertEquals(0, Launcher.carveout("moe_router_norm_topk_rk_pre"), "read again at each launch");
        System.setProperty(key, "");
        assertEquals(-1, Launcher.carveout("moe_route"));
    }

    @Test
    void malformedValuesNameTheProperty() {
        for (String bad : new String[]{"101:.*", "-1:.*", "max:.*", "moe_.*", "50:moe_(route"}) {
            System.setProperty(Launcher.CARVEOUT_PROPERTY, bad);
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Launcher.carveout("moe_route"), bad);
            assertTrue(e.getMessage().contains("orbit.cuda.carveout=" + bad), e.getMessage());
        }
    }
}
